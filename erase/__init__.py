"""salun: erase concepts from diffusion models and data from classifiers with weight saliency (SalUn)."""

__version__ = "0.1.0"
