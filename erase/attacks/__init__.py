"""Attacks on an erased text-to-image model: does the erased concept come back?

- ``inversion``: concept inversion (Pham et al., ICLR 2024), textual inversion through the erased model;
- ``prompt``: adversarial prefix tokens, projected to real tokens (PEZ), with UnlearnDiff's objective
  (Zhang et al., ECCV 2024) or P4D's (Chin et al., ICML 2024);
- ``text``: prompts with trainable slots, run through a CLIP text encoder, and the projection to tokens;
- ``concepts``: what is attacked (prompts, the word a learned token replaces) and who judges success.
"""
