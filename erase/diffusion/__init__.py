"""Erasure for diffusion models: one job (``job.py``) over model families (``sd/``, ``sdxl/``, ``ddpm/``,
behind ``family.py``) and erasure methods (``methods/``), with the losses and image generation they share."""
