"""Push a finished run directory to a Hugging Face-compatible hub: the files (files.py), the model
card (card.py) and the upload with retries (push.py). Reads run directories only."""
