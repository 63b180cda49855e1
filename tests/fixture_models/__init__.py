"""Models the tests and the real-scale benchmark build from config, never shipped in the package: the real SD v1.4
and SDXL component configs (``real_configs``) and tiny random pipelines of each family (``tiny_pipelines``).
``tests/`` is on ``sys.path`` under pytest (its conftest's folder); ``scripts/bench_real_scale.py`` adds it."""
