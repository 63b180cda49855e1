"""The toy world: a tiny Stable Diffusion trained on drawn shapes, and the judge that audits it."""

from pathlib import Path

# Where the built toy world lives in a checkout: ``pipelines/`` beside the package.
PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
TOY_SD = PIPELINES / "toy-sd"
TOY_JUDGE = PIPELINES / "toy-judge"
TOY_DDPM = PIPELINES / "toy-ddpm"
TOY_SDXL = PIPELINES / "toy-sdxl"  # the same world drawn by an SDXL pipeline (salun toy build --family sdxl)
TOY_SD3 = PIPELINES / "toy-sd3"  # the same world drawn by an SD3 pipeline (salun toy build --family sd3)
