"""The classification path: SalUn and the unlearning baselines it is compared with, measured against Retrain.

``data`` (data sets as tensors), ``forget`` (seeded forget sets), ``models`` (CIFAR ResNet-18, SmallCNN),
``train`` (the shared SGD loop), ``metrics`` (UA, RA, TA, MIA-efficacy), ``methods`` (one module per method,
registered in ``METHODS``), ``hparams`` (per-data-set settings), ``checkpoint`` (safetensors + config),
``run`` (method + metrics + run time, used by the CLI and the benchmark). The saliency mask comes from
the shared engine in ``erase.core.mask`` and masked training from ``erase.core.masked_optim``.
"""
