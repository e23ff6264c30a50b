"""What every layer may use: errors, secret redaction, the offline switch, atomic files and the
cache location, rank agreement. Imports nothing else of align."""
