"""normlab: Hydra-composed PyTorch Lightning experiments on normalization."""

__version__ = "0.1.0"
