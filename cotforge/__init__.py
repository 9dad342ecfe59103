"""cotforge: manufacture DeepSeek-R1-style reasoning SFT data."""

__version__ = "0.1.0"
