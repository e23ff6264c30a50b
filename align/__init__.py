"""align: preference alignment of language models with LoRA adapters on one Accelerate loop."""

__version__ = "0.1.0"
