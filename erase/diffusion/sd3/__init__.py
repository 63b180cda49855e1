"""The Stable Diffusion 3 family (``family.py``): an MMDiT transformer trained by flow matching."""
