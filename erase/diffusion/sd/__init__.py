"""Stable Diffusion 1.x and 2.x: loading, prompt encoding, forget/retain data, concept recipes, cards."""
