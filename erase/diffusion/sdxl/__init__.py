"""Stable Diffusion XL: two text encoders, pooled text embeddings and size/crop ``time_ids``."""
