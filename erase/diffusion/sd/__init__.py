"""The Stable Diffusion 1.x and 2.x family (one CLIP text encoder). The text-to-image layer every family shares
(forget/retain data, recipes, the model card) is one level up, in ``erase.diffusion``."""
