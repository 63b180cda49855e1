"""``salun classify train | unlearn | evaluate``: the parsers and commands (wired into ``erase.cli``)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..core.errors import UserError
from .names import ARCHS, DATASETS, METHOD_NAMES

EPILOG = ("Example (offline, a minute on a laptop):\n"
          "  salun classify train --dataset digits --out runs/digits\n"
          "  salun classify unlearn --checkpoint runs/digits --method salun --forget-fraction 0.1 --out runs/salun\n"
          "  salun classify evaluate --checkpoint runs/salun --forget runs/salun/forget.json")


def _data_args(p: argparse.ArgumentParser, with_dataset: bool) -> None:
    if with_dataset:
        p.add_argument("--dataset", choices=DATASETS, default="digits",
                       help="digits and shapes need no network; cifar10/cifar100/svhn come through torchvision; "
                            "imagefolder reads <root>/<class>/<image> (or <root>/train and <root>/test) "
                            "(default %(default)s)")
        p.add_argument("--image-size", type=int, default=32, help="imagefolder: resize to this (default 32)")
    p.add_argument("--data-root", default=None,
                   help="data folder (cifar10/cifar100/svhn/imagefolder)" +
                        ("" if with_dataset else "; default: the one the checkpoint was trained with"))
    p.add_argument("--download", action="store_true", help="let torchvision download the data set into --data-root")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def _forget_args(p: argparse.ArgumentParser, files: bool = False) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--forget-fraction", type=float, help="forget a random fraction in (0, 1) of the training set")
    g.add_argument("--forget-class", help="forget every training sample of this class (an index or a name)")
    if files:
        g.add_argument("--forget", type=Path, help="a forget.json written by `salun classify unlearn`")
    p.add_argument("--seed", type=int, default=0, help="seeds the forget set and the method (default 0)")


def add_classify_parsers(sub) -> None:
    c = sub.add_parser("classify", help="unlearning for image classifiers: train, unlearn (SalUn and baselines), "
                                        "evaluate",
                       description="Machine unlearning for image classifiers: SalUn (masked random labelling) and "
                                   "the baselines it is compared with (Retrain, FT, RL, GA, IU, BE, BS, l1-sparse, "
                                   "SalUn-soft), judged by UA, RA, TA and MIA-efficacy against Retrain.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = c.add_subparsers(dest="classify_command", metavar="CLASSIFY", required=True)

    t = csub.add_parser("train", help="train the original model (seeded)",
                        description="Train the original classifier on the whole training set with SGD (momentum "
                                    "0.9, weight decay 5e-4, cosine lr) and write a checkpoint folder "
                                    "(model.safetensors, config.json with the test accuracy).",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_args(t, with_dataset=True)
    t.add_argument("--arch", choices=ARCHS, default=None,
                   help="small-cnn or resnet18 (CIFAR variant); default: the data set's (see hparams.ORIGINAL)")
    t.add_argument("--epochs", type=float, default=None, help="default: the data set's")
    t.add_argument("--lr", type=float, default=None, help="default: the data set's")
    t.add_argument("--batch-size", type=int, default=None)
    t.add_argument("--seed", type=int, default=0, help="initialisation and data order (default 0)")
    t.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    t.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _common(t)
    t.set_defaults(func=cmd_train)

    u = csub.add_parser("unlearn", help="unlearn a forget set from a checkpoint with one method",
                        description="Pick a forget set (a seeded random fraction, or a whole class), run one "
                                    "unlearning method on the checkpoint and write --out: model.safetensors + "
                                    "config.json (a checkpoint), forget.json (the forget indices), metrics.json "
                                    "(UA, RA, TA, MIA-efficacy in %, RTE in minutes, before and after) and, for "
                                    "salun, mask.safetensors (the saliency mask, bit-packed). With salun, weights "
                                    "outside the mask stay bit-identical to the checkpoint's.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--checkpoint", type=Path, required=True, help="a folder from `salun classify train`")
    u.add_argument("--method", choices=list(METHOD_NAMES), default="salun", help="default %(default)s")
    _forget_args(u)
    u.add_argument("--arch", choices=ARCHS, default=None, help="refuse a checkpoint of another architecture")
    u.add_argument("--epochs", type=float, default=None, help="override the method's tuned epochs")
    u.add_argument("--lr", type=float, default=None, help="override the method's tuned learning rate")
    u.add_argument("--keep", type=float, default=None, help="salun/salun-soft: share of weights in the mask "
                                                           "(default 0.5)")
    u.add_argument("--alpha", type=float, default=None, help="iu: step size; l1-sparse: l1 weight")
    u.add_argument("--out", type=Path, required=True, help="output folder")
    u.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    _data_args(u, with_dataset=False)
    _common(u)
    u.set_defaults(func=cmd_unlearn)

    e = csub.add_parser("evaluate", help="UA, RA, TA, MIA-efficacy of a checkpoint on a forget set",
                        description="Measure a checkpoint on a forget set: UA = 100 - forget accuracy, RA, TA, "
                                    "MIA-efficacy (RBF SVC on the true-label confidence), all in %.",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--checkpoint", type=Path, required=True)
    _forget_args(e, files=True)
    e.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    _data_args(e, with_dataset=False)
    _common(e)
    e.set_defaults(func=cmd_evaluate)


def _setup(args) -> None:
    """First step of every command: check the common options, then set torch's thread count."""
    _check_common(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _data_for(config: dict, args):
    from .data import load_dataset

    d = config["data"]
    data = load_dataset(d["name"], args.data_root or d.get("root"), args.download, d.get("image_size", 32))
    spec = config["model"]
    if data.num_classes != spec["num_classes"] or data.in_channels != spec["in_channels"]:
        raise UserError(f"the data ({data.num_classes} classes, {data.in_channels} channels) does not fit the "
                        f"checkpoint ({spec['num_classes']} classes, {spec['in_channels']} channels)")
    return data


def _split(args, data, config):
    from .forget import check_class, load_split, make_split

    if getattr(args, "forget", None) is not None:
        return load_split(data, args.forget)
    if args.forget_class is not None:
        args.forget_class = check_class(args.forget_class, config["model"]["num_classes"], data.classes)
    return make_split(data, args.forget_fraction, args.forget_class, args.seed)


def _check_positive(args, *names: str) -> None:
    """Each named option, when given, is a finite number above 0 (NaN and inf are refused, not trained with)."""
    from ..core.checks import positive_float

    for name in names:
        positive_float(getattr(args, name, None), "--" + name.replace("_", "-"))


def _check_common(args) -> None:
    """--threads, --device, --batch-size and --image-size, before any data or model is loaded."""
    from ..core.checks import positive_int
    from ..core.device import check_device

    for name in ("threads", "batch_size", "image_size"):
        positive_int(getattr(args, name, None), "--" + name.replace("_", "-"))
    args.device = check_device(args.device)


def salun_checkpoint(folder: Path, unlearned: bool) -> bool:
    """A classifier checkpoint salun wrote before outputs carried their marker: trained (``unlearned``
    False) or unlearned; another library's checkpoint with the same file names is not."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(config, dict) and str(config.get("format", "")).startswith("salun-classifier")
            and ("unlearning" in config) == unlearned)


def cmd_train(args) -> int:
    import torch

    from ..core.atomic import atomic_dir
    from ..core.outputs import guard_output
    from .checkpoint import save_checkpoint
    from .data import load_dataset
    from .hparams import original_config
    from .metrics import accuracy
    from .models import build_model
    from .train import train_original

    _setup(args)
    guard_output(args.out, "classify train", reads=[args.data_root], overwrite=args.overwrite,
                 makes_model=True, own=lambda p: salun_checkpoint(p, unlearned=False))
    _check_positive(args, "epochs", "lr")
    cfg = original_config(args.dataset)
    cfg.update({k: v for k, v in {"arch": args.arch, "epochs": args.epochs, "lr": args.lr,
                                  "batch_size": args.batch_size}.items() if v is not None})
    data = load_dataset(args.dataset, args.data_root, args.download, args.image_size)
    torch.manual_seed(args.seed)
    model = build_model(cfg["arch"], data.in_channels, data.num_classes)
    train_original(model, data, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch_size"], seed=args.seed,
                   device=args.device)
    metrics = {"train_acc": accuracy(model, data, torch.arange(len(data.train_y)), device=args.device),
               "test_acc": accuracy(model, data, torch.arange(len(data.test_y)), test=True, device=args.device)}
    root = str(Path(args.data_root).resolve()) if args.data_root else None
    config = {"data": {"name": data.name, "root": root, "image_size": args.image_size, "classes": data.classes},
              "train": {**cfg, "seed": args.seed}, "metrics": metrics}
    with atomic_dir(args.out, args.overwrite, mark="classify train") as tmp:
        save_checkpoint(tmp, model.cpu(), config)
    print(json.dumps(metrics))
    print(f"wrote {args.out}")
    return 0


def cmd_unlearn(args) -> int:
    from ..core.atomic import atomic_dir
    from ..core.export import check_output
    from .checkpoint import load_checkpoint, read_config, save_checkpoint
    from .forget import check_fraction
    from .hparams import method_config
    from .metrics import evaluate
    from .run import run_method

    _setup(args)
    if args.forget_fraction is not None:
        check_fraction(args.forget_fraction)
    _check_positive(args, "epochs", "lr", "alpha")
    if args.keep is not None and not 0 < args.keep <= 1:
        raise UserError(f"--keep must be in (0, 1], got {args.keep}")
    check_output(args.out, args.checkpoint, args.overwrite,  # never over (or inside) the checkpoint
                 replaceable=(), command="classify unlearn", own=lambda p: salun_checkpoint(p, unlearned=True))
    config = read_config(args.checkpoint)
    if args.forget_class is not None:
        from .forget import check_class

        args.forget_class = check_class(args.forget_class, config["model"]["num_classes"],
                                        config.get("data", {}).get("classes"))
    model, config = load_checkpoint(args.checkpoint, args.arch)
    data = _data_for(config, args)
    split = _split(args, data, config)
    cfg = method_config(args.method, data.name, split.scenario,
                        {"epochs": args.epochs, "lr": args.lr, "keep": args.keep, "alpha": args.alpha})
    before = evaluate(model, split, args.device)
    result, after, cfg = run_method(args.method, model, split, args.seed, cfg, args.device)
    report = {"method": args.method, "config": cfg, "seed": args.seed, "forget": split.describe(),
              "checkpoint": str(args.checkpoint), "original": before, "unlearned": after}
    if result.mask is not None:
        report["mask"] = {k: v for k, v in result.mask.stats().items() if k != "per_tensor_fraction"}
    with atomic_dir(args.out, args.overwrite, mark="classify unlearn") as tmp:
        save_checkpoint(tmp, result.model.cpu(), {**{k: v for k, v in config.items() if k not in ("format", "model")},
                                                  "unlearning": {k: report[k] for k in
                                                                 ("method", "config", "seed", "forget")}})
        split.save(tmp / "forget.json")
        (tmp / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        if result.mask is not None:
            result.mask.save(tmp / "mask.safetensors")
    line = ", ".join(f"{k} {before[k]:.2f} -> {after[k]:.2f}" for k in ("UA", "RA", "TA", "MIA"))
    print(f"{args.method}: {line}; RTE {after['RTE']:.3f} min")
    print(f"wrote {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint
    from .forget import check_fraction
    from .metrics import evaluate

    _setup(args)
    if args.forget_fraction is not None:
        check_fraction(args.forget_fraction)
    model, config = load_checkpoint(args.checkpoint)
    data = _data_for(config, args)
    split = _split(args, data, config)
    metrics = evaluate(model, split, args.device)
    print(json.dumps(metrics, indent=2))
    if args.json:
        import os

        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"forget": split.describe(), **metrics}, indent=2) + "\n")
        tmp.replace(args.json)  # never a half-written report
    return 0
