"""salun: erase concepts from diffusion models and data from classifiers with weight saliency (SalUn).

The Python API (``erase.erase_concept``, ``erase.audit_concept``, ``erase.audit_nudity`` and their results) lives
in ``erase.api``; it is imported on first use, so that ``import erase`` (the command line's) stays light.
"""

from .version import __version__
_API = ("erase_concept", "EraseResult", "audit_concept", "audit_nudity", "AuditResult")
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'erase' has no attribute {name!r}")
