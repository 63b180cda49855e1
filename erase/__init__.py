"""salun: erase concepts from diffusion models and data from classifiers with weight saliency (SalUn).

The Python API (``erase.erase_concept``, ``erase.EraseResult``) lives in ``erase.api``; it is imported on first
use, so that ``import erase`` (the command line's) stays light.
"""

from .version import __version__
__all__ = ["erase_concept", "EraseResult", "__version__"]


def __getattr__(name: str):
    if name in ("erase_concept", "EraseResult"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'erase' has no attribute {name!r}")
