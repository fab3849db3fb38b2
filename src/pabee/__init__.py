"""pabee: Patience-based Early Exit (PABEE) for Hugging Face Transformer encoders."""

__version__ = "0.1.0"
