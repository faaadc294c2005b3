"""reprlab: small, fast, reproducible image-representation research in plain PyTorch."""
__version__ = "0.1.0"
