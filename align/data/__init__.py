"""Data layer: records -> tokenized examples -> batches."""
