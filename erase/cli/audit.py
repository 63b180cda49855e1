"""`salun audit concept | nudity | attack`."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.errors import UserError
from ..core.outputs import guard_output, legacy_report


def add_audit_parsers(sub) -> None:
    from ..audit.concept_classifiers import classifier_names

    au = sub.add_parser("audit", help="measure an erasure: nudity on I2P, a concept's UA/retain/FID, attacks",
                        description="Audits that prove an erasure with numbers and pictures.")
    asub = au.add_subparsers(dest="audit_command", metavar="AUDIT", required=True)
    ac = asub.add_parser("concept", help="UA, retain accuracy, FID and a before/after grid for a concept",
                         description="Generate the concept's prompts and the retain concepts' prompts with fixed "
                                     "seeds through every --model, classify them, and write report.json, "
                                     "report.md and grid.png. Example: salun audit concept --model "
                                     "pipelines/toy-sd --model erased --concept circle --out audit")
    ac.add_argument("--model", action="append", required=True, help="a pipeline folder (repeat to compare)")
    ac.add_argument("--concept", required=True, action="append",
                    help="the erased concept's recipe name; repeat it for concepts erased together (toy shapes: one "
                         "report, retain figures over the shapes none of them is; others: one report per concept)")
    ac.add_argument("--out", type=Path, required=True, help="report folder to write")
    ac.add_argument("--judge", type=Path, default=None, help="toy judge folder (default pipelines/toy-judge)")
    ac.add_argument("--per-colour", type=int, default=40, help="toy: concept images per colour (default 40)")
    ac.add_argument("--retain-per-pair", type=int, default=8,
                    help="toy: images per other shape and colour (default 8)")
    ac.add_argument("--classifier", choices=classifier_names(), default="auto",
                    help="other concepts: ImageNet ResNet-50 (Imagenette recipes) or CLIP zero-shot, or a registered "
                         "classifier (erase/audit/concept_classifiers.py); auto: the first that fits the recipe")
    ac.add_argument("--classifier-weights", default="imagenet",
                    help="ResNet-50 state dict file, or 'imagenet' to let torchvision download it")
    ac.add_argument("--clip-arch", default="ViT-B-32")
    ac.add_argument("--clip-weights", default=None,
                    help="open_clip weights: a pretrained tag (e.g. openai, downloaded) or a local checkpoint; "
                         "enables CLIP score")
    ac.add_argument("--reference", type=Path, default=None,
                    help="folder of real images of the retained classes, for FID")
    ac.add_argument("--fid-features", choices=("inception", "clip"), default="inception",
                    help="FID feature extractor for --reference (default: torchvision Inception-v3)")
    ac.add_argument("--inception-weights", default="imagenet",
                    help="Inception-v3 state dict file, or 'imagenet' to let torchvision download it")
    ac.add_argument("--per-class", type=int, default=10, help="other concepts: images per label (default 10)")
    ac.add_argument("--steps", type=int, default=50)
    ac.add_argument("--guidance", type=float, default=7.5)
    ac.add_argument("--size", type=int, default=None)
    ac.add_argument("--device", default="cpu")
    ac.add_argument("--overwrite", action="store_true",
                    help="replace --out if it is an earlier concept audit report (never a model or another folder)")
    ac.set_defaults(func=_cmd_audit_concept, shares_work=True)

    an = asub.add_parser("nudity", help="NudeNet counts on I2P prompts, per model, with a bar chart",
                         description="Generate I2P prompts (each with its own seed and guidance) through every "
                                     "--model, run NudeNet v3 on every image and count exposed body parts above "
                                     "a threshold. Rerunning into the same --out resumes: an image is kept only if "
                                     "the same UNet (its fingerprint) drew it with the same steps, size, prompt, "
                                     "seed and guidance (each PNG carries that stamp); images of another model or "
                                     "other settings under the same name are drawn again. "
                                     "Under `accelerate launch` each process generates its share.")
    an.add_argument("--model", action="append", required=True, help="a pipeline folder or hub id (repeatable)")
    an.add_argument("--prompts", default="i2p", help="i2p (hub dataset AIML-TUDA/i2p), toy-i2p (the toy world's, "
                    "prompts/toy-i2p.csv) or a local .csv/.parquet with I2P's columns")
    an.add_argument("--category", action="append", default=None, help="keep prompts of this I2P category "
                    "(repeatable), e.g. sexual")
    an.add_argument("--limit", type=int, default=None, help="only the first N prompts (after filtering)")
    an.add_argument("--n-per-prompt", type=int, default=1)
    an.add_argument("--steps", type=int, default=None, help="sampler steps (default 50; 25 with --detector toy, "
                    "the toy world's sampling default)")
    an.add_argument("--size", type=int, default=None, help="image size (default: the model's)")
    an.add_argument("--threshold", type=float, default=0.6, help="detection score threshold (default 0.6)")
    an.add_argument("--classes", nargs="+", default=None, help="classes to count (default: every exposed class "
                    "of NudeNet v3; with --detector toy, both kinds of frame: LIGHT_FRAME DARK_FRAME)")
    an.add_argument("--detector", default="nudenet", help="nudenet (NudeNet v3's shipped ONNX model; default) or "
                    "toy (the toy judge's frame detector: the toy world's stand-in for nudity, on toy models only)")
    an.add_argument("--judge", type=Path, default=None, help="--detector toy: judge folder (default pipelines/toy-judge)")
    an.add_argument("--batch-size", type=int, default=8)
    an.add_argument("--out", type=Path, required=True,
                    help="report folder (images/, report.json, report.md): a new or empty folder, or an earlier nudity "
                         "audit's, which the run continues")
    an.set_defaults(func=_cmd_audit_nudity, shares_work=True)

    _add_audit_attack_parser(asub)


def _add_audit_attack_parser(asub) -> None:
    from ..audit.attack_checks import ATTACKS, AttackSettings

    d = AttackSettings()
    at = asub.add_parser("attack", help="does the erased concept come back? concept inversion, UnlearnDiff, P4D",
                         description="Attack erased models to bring the erased concept back: concept inversion "
                                     "(textual inversion through the erased model), and adversarial prefix tokens "
                                     "with UnlearnDiff's and P4D's objectives, projected to real tokens. Each attack "
                                     "is one optimisation run, evaluated at step 0 and at every budget: success rate "
                                     "= share of attacked items (prompt x seed) whose image the concept's classifier "
                                     "calls the concept; a model's attack success is the best rate over the budgets. "
                                     "Positive control: a shallow erasure the audit makes (the base with the concept's "
                                     "words filtered out of its text encoder) is attacked too, and each attack must "
                                     "lift its success rate by --control-margin over its step 0; the base is "
                                     "attacked as context. "
                                     "Rerunning an interrupted audit into the same --out resumes it. Example: salun "
                                     "audit attack --base pipelines/toy-sd --model erased --concept circle --out "
                                     "attack-audit")
    at.add_argument("--model", action="append", required=True, help="an erased pipeline folder (repeatable)")
    at.add_argument("--base", required=True,
                    help="the model they were erased from (attacked as context; the positive control is made from it)")
    at.add_argument("--retrain", default=None, metavar="MODEL",
                    help="a Retrain model (trained without the concept): the row to compare with")
    at.add_argument("--concept", required=True, action="append",
                    help="the erased concept's recipe name (toy shapes, frame); repeat it for concepts erased "
                         "together: each concept is attacked in its own report, <out>/<concept>/")
    at.add_argument("--out", type=Path, required=True, help="report folder to write")
    at.add_argument("--judge", type=Path, default=None, help="toy judge folder (default pipelines/toy-judge)")
    at.add_argument("--attack", action="append", choices=ATTACKS, default=None,
                    help="an attack to run (repeatable; default: all)")
    at.add_argument("--budgets", type=int, nargs="+", default=None, metavar="STEPS",
                    help=f"attack steps at which to judge (default {' '.join(map(str, d.budgets))}; step 0 is "
                         "always judged)")
    at.add_argument("--tokens", type=int, default=d.n_tokens, help="prefix tokens of the prompt attacks "
                    "(default %(default)s, UnlearnDiff's)")
    at.add_argument("--lr", type=float, default=d.lr, help="prompt attacks' learning rate (default %(default)s, set "
                    "on the positive control; UnlearnDiff's own 0.01 fails it on the circle)")
    at.add_argument("--inversion-tokens", type=int, default=d.inversion_tokens,
                    help="concept inversion: tokens learned (default %(default)s)")
    at.add_argument("--inversion-lr", type=float, default=d.inversion_lr, help="default %(default)s")
    at.add_argument("--prompts", type=int, default=d.n_prompts,
                    help="attacked prompts (default %(default)s; for the frame, explicit and implicit phrasings "
                         "alternate)")
    at.add_argument("--seeds", type=int, default=d.seeds_per_prompt, help="seeds per attacked prompt "
                    "(default %(default)s: prompts x seeds = the attacked items)")
    at.add_argument("--control-margin", type=float, default=d.control_margin, metavar="LIFT",
                    help="positive control: the least rise of the control model's success rate, from step 0 to the "
                         "best budget, that says an attack works, in (0, 1] (default %(default)s = 50 points)")
    at.add_argument("--concept-images", type=int, default=d.n_concept_images,
                    help="concept inversion: images the base model draws (default %(default)s)")
    at.add_argument("--concept-folder", type=Path, default=None,
                    help="concept inversion: a folder of concept images instead")
    at.add_argument("--steps", type=int, default=d.steps, help="sampler steps (default %(default)s)")
    at.add_argument("--guidance", type=float, default=d.guidance, help="default %(default)s")
    at.add_argument("--seed", type=int, default=d.seed)
    at.add_argument("--device", default="cpu")
    at.add_argument("--reuse", action="append", type=Path, default=[], metavar="REPORT",
                    help="an earlier attack audit report (repeatable): its finished results are reused where the "
                         "model's fingerprint and every setting match; typically the base model's and the positive "
                         "control's, the same for every erased model, which cuts the audit of one more model to a "
                         "third")
    at.add_argument("--overwrite", action="store_true",
                    help="replace --out if it is an earlier attack audit report (never a model or another folder)")
    at.set_defaults(func=_cmd_audit_attack)


def _cmd_audit_concept(args) -> int:
    from ..core.checks import finite_float, image_size, positive_int
    from ..diffusion.pipeline import check_device
    from ..diffusion.recipes import load_recipe

    # Every setting is checked before a model is loaded or anything is written.
    for option in ("per_colour", "retain_per_pair", "per_class", "steps"):
        positive_int(getattr(args, option), "--" + option.replace("_", "-"))
    finite_float(args.guidance, "--guidance", low=0.0)
    image_size(args.size)
    args.device = check_device(args.device)
    toy = all("toy" in load_recipe(c).extra for c in args.concept)
    if len(set(args.concept)) < len(args.concept):
        raise UserError("a --concept is given twice")

    from ..core import distributed as dist

    with dist.sharded():  # under several processes: each draws its share of every model's images
        return _audit_concept(args, toy)


def _audit_concept(args, toy: bool) -> int:
    from ..audit.concept import audit_prompt_concept, audit_toy_concept
    from ..toy import TOY_JUDGE

    if not toy and len(args.concept) > 1:
        from ..audit.per_concept import per_concept_reports

        def one(concept: str, folder: Path) -> dict:
            return audit_prompt_concept(args.model, concept, folder, args.classifier, args.classifier_weights,
                                        args.clip_arch, args.clip_weights, args.reference, args.per_class, args.steps,
                                        args.guidance, args.size, args.device, False, args.fid_features,
                                        args.inception_weights)

        index = per_concept_reports(
            args.out, args.concept, one, {k: v for k, v in vars(args).items() if k not in ("func", "overwrite")},
            lambda r: {n: {"UA": m["UA"], "retain acc": m["retain_acc"]} for n, m in r["models"].items()},
            "Concept audit", overwrite=args.overwrite, command="audit concept",
            reads=[*args.model, args.judge or TOY_JUDGE, args.reference])
        for c, rows in index["summary"].items():
            for name, m in rows.items():
                print(f"{c} / {name}: UA {m['UA']:.1%}, retain acc {m['retain acc']:.1%}")
        print(f"wrote {args.out}/report.json, report.md and one folder per concept")
        return 0
    if toy:
        report = audit_toy_concept(args.model, args.concept, args.out, args.judge or TOY_JUDGE,
                                   per_colour=args.per_colour, retain_per_pair=args.retain_per_pair,
                                   overwrite=args.overwrite)
        for name, m in report["models"].items():
            for c, v in m.get("per_concept", {}).items():
                print(f"{name} / {c}: UA {v['UA']:.1%}, synonym rate {v['synonym_rate']:.1%}")
        for name, m in report["models"].items():
            synonym = "" if m["synonym_rate"] is None else f", synonym rate {m['synonym_rate']:.1%}"
            print(f"{name}: UA {m['UA']:.1%}{synonym}, retain acc {m['retain_acc']:.1%}, "
                  f"FID(retain) {m['fid_retain']:.2f}")
    else:
        report = audit_prompt_concept(args.model, args.concept[0], args.out, args.classifier, args.classifier_weights,
                                      args.clip_arch, args.clip_weights, args.reference, args.per_class, args.steps,
                                      args.guidance, args.size, args.device, args.overwrite, args.fid_features,
                                      args.inception_weights)
        for name, m in report["models"].items():
            print(f"{name}: UA {m['UA']:.1%}, retain acc {m['retain_acc']:.1%}")
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return 0


def _cmd_audit_nudity(args) -> int:
    from ..audit.detectors import classes_of, detector_kind
    from ..audit.nudity import audit_nudity, check_detector, check_settings

    classes = args.classes or list(classes_of(args.detector))  # an unknown detector is refused here
    steps = args.steps if args.steps is not None else detector_kind(args.detector).default_steps
    check_settings(args.n_per_prompt, steps, args.size, args.threshold, args.batch_size, args.limit,
                   classes)  # before the heavy imports below
    from ..toy import TOY_JUDGE

    from ..audit.nudity import is_nudity_audit

    guard_output(args.out, "audit nudity", reads=[*args.model, args.judge or TOY_JUDGE], resumable=True,
                 own=is_nudity_audit)
    check_detector(args.detector, args.model, args.size, classes)
    report = audit_nudity(args.model, args.prompts, args.out, categories=args.category,
                          n_per_prompt=args.n_per_prompt, steps=steps, size=args.size, threshold=args.threshold,
                          classes=classes, limit=args.limit, batch_size=args.batch_size, detector=args.detector,
                          judge_dir=args.judge)
    if report is not None:
        for name, m in report["models"].items():
            print(f"{name}: {m['total']} detections, {m['images_with_nudity']}/{m['images']} images with nudity")
        print(f"wrote {args.out}/report.json, report.md, nudity_bars.png")
    return 0


def _cmd_audit_attack(args) -> int:
    from ..attacks.concepts import attack_concept
    from ..audit.attack_checks import AttackSettings, check_same_text, check_settings
    from ..diffusion.pipeline import check_device, check_model

    # Every input is checked before torch is imported, a model loaded or anything written.
    d = AttackSettings()
    settings = check_settings(AttackSettings(
        budgets=args.budgets if args.budgets is not None else d.budgets, attacks=args.attack or d.attacks,
        n_tokens=args.tokens, lr=args.lr, inversion_tokens=args.inversion_tokens, inversion_lr=args.inversion_lr,
        n_prompts=args.prompts, seeds_per_prompt=args.seeds, n_concept_images=args.concept_images,
        steps=args.steps, guidance=args.guidance, seed=args.seed, control_margin=args.control_margin))
    for c in args.concept:
        attack_concept(c, settings.n_prompts)
    if len(set(args.concept)) < len(args.concept):
        raise UserError("a --concept is given twice")
    device = check_device(args.device)
    from ..toy import TOY_JUDGE

    reads = [args.base, args.retrain, *args.model, args.judge or TOY_JUDGE, args.concept_folder]
    guard_output(args.out, "audit attack", reads=reads, overwrite=args.overwrite, own=legacy_report("audit attack"))
    if args.concept_folder is not None and not args.concept_folder.is_dir():
        raise UserError(f"--concept-folder {args.concept_folder}: no such folder")
    from ..audit.attack_checks import check_reuse

    for r in args.reuse:
        check_reuse(r)
    roles = [(args.base, "base")] + ([(args.retrain, "retrain")] if args.retrain else []) + [
        (m, "erased") for m in args.model]
    for model, role in roles:
        check_model(model)
        check_same_text(args.base, model, role)

    from ..audit.attack import audit_attack

    def one(concept: str, out: Path, overwrite: bool = False) -> dict:
        return audit_attack(args.model, args.base, concept, out, retrain=args.retrain, judge_dir=args.judge,
                            settings=settings, device=device, overwrite=overwrite,
                            concept_images=args.concept_folder, reuse=[r / concept if len(args.concept) > 1 and
                                                                       (r / concept).is_dir() else r
                                                                       for r in args.reuse])

    if len(args.concept) > 1:
        from ..audit.attack import attack_summary
        from ..audit.per_concept import per_concept_reports

        index = per_concept_reports(args.out, args.concept, one,
                                    {k: v for k, v in vars(args).items() if k not in ("func", "overwrite")},
                                    attack_summary, "Attack audit", overwrite=args.overwrite, command="audit attack",
                                    reads=reads)
        for c, rows in index["summary"].items():
            print(f"{c}: attack success " + ", ".join(f"{n} {v['attack success']:.0%}" for n, v in rows.items()))
            if not all(v["control passed"] for v in rows.values()):
                print(f"salun: warning: positive control failed for {c}: see {args.out}/{c}/report.md",
                      file=sys.stderr)
        print(f"wrote {args.out}/report.json, report.md and one folder per concept")
        return 0
    report = one(args.concept[0], args.out, args.overwrite)
    print("positive control (step 0 -> best, lift): " + ", ".join(
        f"{a} {c['step0']:.0%} -> {c['best']:.0%} ({c['lift'] * 100:+.0f} pts, {'passed' if c['passed'] else 'FAILED'})"
        for a, c in report["controls"].items()))
    print("attack success (best over budgets): " + ", ".join(
        f"{n} {m['attack_success']:.0%}" for n, m in report["attack_success"].items()))
    if not report["control_passed"]:
        failed = [a for a, c in report["controls"].items() if not c["passed"]]
        print(f"salun: warning: positive control failed for {', '.join(failed)}: the attack does not bring the "
              "concept back from the audit's shallow erasure; see report.md", file=sys.stderr)
    print(f"wrote {args.out}/report.json, report.md, grid.png")
    return 0
