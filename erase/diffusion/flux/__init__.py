"""The FLUX.1 family (``family.py``): a guidance-distilled rectified-flow transformer over packed latents."""
