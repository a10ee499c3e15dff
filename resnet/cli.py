"""Command line: ``python -m resnet table | classify | weights | finetune | pretrain``."""
from __future__ import annotations

import argparse
import json
import sys

from .models.resnet import ARCHS


def cmd_table(args) -> int:
    if args.note:
        return cmd_note_table(args)
    if args.arch is None:
        print("error: name a network (one of: " + ", ".join(ARCHS) + "), or give --note for the note's table",
              file=sys.stderr)
        return 2
    from .analysis.summary import format_table, layer_table, totals
    table = layer_table(args.arch, args.image_size, stride_in_1x1=args.stride_in_1x1)
    if args.json:
        print(json.dumps({"arch": args.arch, "image_size": args.image_size, "stride_in_1x1": args.stride_in_1x1,
                          "rows": table, "totals": totals(table)}, indent=2))
    else:
        print(format_table(args.arch, table))
    return 0


def cmd_note_table(args) -> int:
    """``table --note``: the note's five depths side by side (v1 unless --v15), then the bottleneck beside a basic
    block."""
    from .analysis.note_table import block_comparison, block_sentence, comparison_dict, note_table
    if args.arch is not None:
        print("error: --note shows all five depths; leave out the network's name", file=sys.stderr)
        return 2
    table = note_table(v1=not args.v15, image_size=args.image_size)
    blocks = block_comparison()
    if args.json:
        print(json.dumps({**table.as_dict(), "block_comparison": comparison_dict(blocks)}, indent=2,
                         ensure_ascii=False))
        return 0
    print(table.text())
    print()
    print(f"One block at {blocks[0].size}×{blocks[0].size}, counted on the real modules:")
    for b in blocks:
        print(f"  {b.kind:<12} {b.block:<30} {b.params:>11,} params {b.macs:>15,} multiply-adds")
    print(block_sentence(blocks, v1=not args.v15))
    return 0


def cmd_classify(args) -> int:
    from .preprocess import BadImage
    from .models.resnet import build_model
    from .predict import classify
    from .weights import WeightsUnavailable, load_pretrained
    try:
        model, note = load_pretrained(args.arch, path=args.weights), None
    except WeightsUnavailable as e:
        if args.weights:
            raise
        model, note = build_model(args.arch).eval(), f"warning: {e.detail} Using random weights: predictions are meaningless."
        print(note, file=sys.stderr)
    try:
        top = classify(model, args.image, args.top_k)
    except BadImage as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"arch": args.arch, "pretrained": note is None,
                          "top": [{"label": l, "probability": p} for l, p in top]}, indent=2))
    else:
        for label, p in top:
            print(f"{p:7.2%}  {label}")
    return 0


def cmd_weights(args) -> int:
    from .weights import cached, download, find_weights
    if args.action == "list":
        for row in cached():
            where = f"{row['path']} ({row['size_mb']} MB)" if row["path"] else "not cached"
            print(f"{row['arch']:<18} {where}")
        return 0
    for arch in args.archs or ["resnet18"]:
        path = find_weights(arch, download_ok=False) if _has(arch) else download(arch)
        print(f"{arch}: {path}")
    return 0


def _has(arch: str) -> bool:
    from .weights import candidates
    return any(p.is_file() for p in candidates(arch))


def cmd_finetune(args) -> int:
    from .train.distributed import launched_by_torchrun
    if launched_by_torchrun():  # torchrun --nproc_per_node=N -m resnet finetune …
        from .train.distributed import run_cli as run_distributed
        return run_distributed(args)
    from .train.finetune import run_cli
    return run_cli(args)


def cmd_pretrain(args) -> int:
    from .train.pretrain import run_cli
    return run_cli(args)


def per_class_arg(value: str):
    """``--per-class``: a whole number, or ``all`` (every training image)."""
    return "all" if value.strip().lower() == "all" else int(value)


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``finetune``. Those a preset sets default to None: ``finetune.config_from_args`` takes the
    preset's value (``estimate.PRESETS``, the Fine-tune tab's own) for each flag not given."""
    from .train.estimate import DEFAULT_PRESET, PRESETS
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help=f"the Fine-tune tab's presets (default: {DEFAULT_PRESET}); any flag below overrides its value")
    p.add_argument("--dataset", default="synthetic", help="synthetic | hymenoptera | flowers | PATH (.zip or folder)")
    p.add_argument("--arch", default=None, choices=list(ARCHS))
    p.add_argument("--strategies", default=None, help="comma list of all,last,head,replace,scratch")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: per strategy)")
    p.add_argument("--weights", default=None, help="a pretrained checkpoint file")
    p.add_argument("--per-class", type=per_class_arg, default=None, metavar="N|all",
                   help="training images per class (a seeded sample), the small-data knob; all: every one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, metavar="OUT", help="write the per-strategy summary here (each "
                   "strategy's weight source: imagenet, builtin-source or random)")
    p.add_argument("--save-dir", default=None, help="export each fine-tuned model here")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m resnet", description="ResNet Lab from the command line.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("table", help="the layer table of one depth, or the note's table of five (--note)")
    p.add_argument("arch", nargs="?", choices=list(ARCHS), help="the network (leave out with --note)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--stride-in-1x1", action="store_true", help="the paper's original bottleneck (v1)")
    p.add_argument("--note", action="store_true", help="the note's table: ResNet-18 … 152 side by side with the "
                   "FLOPs row (v1, as the paper), and the bottleneck beside a basic block")
    p.add_argument("--v15", action="store_true", help="with --note: torchvision's bottleneck (stride in the 3×3)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("classify", help="ImageNet top-k for one image")
    p.add_argument("image")
    p.add_argument("--arch", default="resnet18", choices=list(ARCHS))
    p.add_argument("--weights", default=None)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("weights", help="fetch or list pretrained weights")
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("archs", nargs="*", metavar="ARCH", help=f"one or more of: {', '.join(ARCHS)}")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("finetune", help="compare transfer strategies on a small dataset")
    add_finetune_args(p)
    p.set_defaults(func=cmd_finetune)

    from .train.pretrain import DEFAULTS
    p = sub.add_parser("pretrain", help="pretrain an arch on the built-in source set (used when ImageNet weights "
                       "are unavailable)")
    p.add_argument("--arch", default="resnet18", choices=list(ARCHS))
    p.add_argument("--image-size", type=int, default=DEFAULTS["image_size"])
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    p.add_argument("--per-class", type=int, default=DEFAULTS["per_class"], metavar="N",
                   help="training pictures per source class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, metavar="FOLDER",
                   help="store it here (default: RESNET_WEIGHTS_DIR, else torch's hub cache)")
    p.add_argument("--json", default=None, metavar="OUT", help="write a summary here")
    p.set_defaults(func=cmd_pretrain)
    return ap


def main(argv=None) -> int:
    from .weights import WeightsUnavailable
    args = parser().parse_args(argv)
    if getattr(args, "archs", None):
        bad = [a for a in args.archs if a not in ARCHS]
        if bad:
            print(f"error: unknown architecture {bad[0]!r}; choose from {', '.join(ARCHS)}", file=sys.stderr)
            return 2
    try:
        return args.func(args)
    except (WeightsUnavailable, ValueError) as e:
        print(f"error: {getattr(e, 'detail', e)}", file=sys.stderr)  # the operator's version, with paths
        return 2
