"""Print a model's parameter count per module, for one or more layered configs.

Examples:
  astra summary --config configs/astra_paper.yaml
  astra summary --config configs/small.yaml --config configs/ablations/m4.yaml
  astra summary --config configs/astra_paper.yaml model.use_audio=false

Later --config files override earlier ones; trailing section.key=value pairs
override both. The model is built on the meta device: no weights are allocated
and no weight file is read. The last line is ``total_params: N``.
"""

from __future__ import annotations

import argparse

HELP = "parameter count of a model per module"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE", help="YAML config (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")


def run(args: argparse.Namespace) -> int:
    import torch

    from astra.config import load_config
    from astra.model import build_model, parameter_breakdown

    config = load_config(args.config, args.overrides)
    with torch.device("meta"):
        model = build_model(config.model, config.clips, load_pretrained=False)
    counts = parameter_breakdown(model)
    total = sum(counts.values())
    encoder = model.encoder
    print(f"configs: {', '.join(args.config) or '(defaults)'}")
    print(
        f"tokens per clip: {encoder.num_visual_tokens} visual + {encoder.num_audio_tokens} audio; "
        f"encoder segments per layer: {list(encoder.segments_per_layer)}; "
        f"queries (L_out): {model.num_outputs}"
    )
    width = max(len("module"), *(len(name) for name in counts))
    print(f"{'module':<{width}}  {'params':>13}  {'share':>7}")
    for name, count in counts.items():
        print(f"{name:<{width}}  {count:>13,}  {100 * count / max(total, 1):>6.2f}%")
    print(f"total_params: {total}")
    return 0
