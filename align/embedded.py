"""`python -m align.embedded` prints the embedded model's directory, preparing it once.

The code lives in align/models/embedded.py; this entry point stays for scripts written before the
per-layer layout (the GPU-box preparation, ../shared/gpu/prepare.sh, calls it)."""

from align.models.embedded import EMBEDDED_NAME, embedded_model_dir

__all__ = ["EMBEDDED_NAME", "embedded_model_dir"]

if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    print(embedded_model_dir())
