"""What SliceGPT's knob removes of a real model, counted on the model itself: for each knob, the model is given the
rotated structure at that width (diet.prune.rotation.rebuild_rotated: norms folded, shortcut matrices, Gemma's
post-branch maps, the head untied; the same shapes `method=slicegpt` makes, whose counts equal its saved tensors,
tests/test_slicegpt.py) and its parameters counted; beside it DIET's removal at 20% of the MLP channels
(magnitude's uniform mask: the same per-layer count), and the knob whose width removes the non-embedding count
nearest DIET's (the one the study's tables compare at, Method.compared_at = "non_embedding").

    python -m experiments.slicegpt_budget --models smollm2_135m gemma3_270m --out results/checks/slicegpt_budget.md
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from typing import Any

from omegaconf import OmegaConf

from diet.dims.apply import apply_selection
from diet.io import atomic_write_text
from diet.methods import METHODS, PruningContext
from diet.methods.inputs import Target
from diet.methods.slicegpt import SliceGPTOptions, sliced_width
from diet.models import load_model
from diet.models.adapters import adapter_for, parameter_counts
from diet.prune import rotation

KNOBS = (0.2, 0.25, 0.3, 0.4)
DIET_SPARSITY = 0.2


def removed(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {key: 1 - after[key] / before[key] for key in ("non_embedding", "total")}


def sliced_counts(model: Any, width: int) -> dict[str, int]:
    """Parameters of `model` with SliceGPT's structure at `width` (the embedding and every block at it, but the
    last block's output and the head's input at the full width, as rotate_and_slice leaves them)."""
    rotated, hidden = copy.deepcopy(model), adapter_for(model).hidden_width()
    depth = len(adapter_for(model).layers())
    # the last block writes the full width, which the head reads unsliced (rotate_and_slice's d_out)
    spec = {"hidden_size": hidden, "embedding": width, "final_eps": 1e-6,
            "layers": [{"input": width, "attention": width, "output": hidden if index == depth - 1 else width,
                        "eps": [1e-6] * 4} for index in range(depth)]}
    rotation.rebuild_rotated(rotated, {rotation.SPEC_KEY: spec})
    return parameter_counts(rotated)


def diet_counts(loaded: Any) -> dict[str, int]:
    """Parameters after DIET's 20% of the MLP channels (a uniform per-layer count: magnitude's mask has it too)."""
    pruned = copy.deepcopy(loaded)
    method = METHODS.get("magnitude")
    ctx = PruningContext(loaded=pruned, data_dir=None, timer=lambda stage: contextlib.nullcontext())
    apply_selection(pruned.model, method().select(ctx, method.Inputs(target=Target(DIET_SPARSITY, "mlp"))))
    return parameter_counts(pruned.model)


def model_rows(name: str, knobs: tuple[float, ...]) -> list[str]:
    loaded = load_model(OmegaConf.to_container(OmegaConf.load(f"conf/model/{name}.yaml"), resolve=True))
    before, hidden = parameter_counts(loaded.model), adapter_for(loaded.model).hidden_width()
    diet = removed(before, diet_counts(loaded))
    interval = SliceGPTOptions().round_interval
    widths: dict[int, dict[str, float]] = {}

    def at(width: int) -> dict[str, float]:
        if width not in widths:
            widths[width] = removed(before, sliced_counts(loaded.model, width))
        return widths[width]

    # the removal falls as the width grows: bisect for the widths either side of DIET's count
    low, high = interval, hidden - interval
    while high - low > interval:
        middle = (low + high) // 2 // interval * interval
        low, high = (middle, high) if at(middle)["non_embedding"] > diet["non_embedding"] else (low, middle)
    nearest = min((low, high), key=lambda width: abs(at(width)["non_embedding"] - diet["non_embedding"]))
    knob_of_nearest = round(1 - nearest / hidden, 4)
    rows = [f"| {name} | DIET, 20% of MLP channels | | {100 * diet['non_embedding']:.2f}% | {100 * diet['total']:.1f}% |"]
    for knob in sorted({*knobs, knob_of_nearest}):
        width = sliced_width(hidden, knob, interval)
        r = at(width)
        mark = " (nearest DIET's)" if width == nearest else ""
        rows.append(f"| {name} | SliceGPT {knob:g}{mark} | {width} of {hidden} | {100 * r['non_embedding']:.2f}% | "
                    f"{100 * r['total']:.1f}% |")
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2_135m", "gemma3_270m"])
    parser.add_argument("--knobs", nargs="+", type=float, default=list(KNOBS))
    parser.add_argument("--out", default=None, help="write the table there (markdown)")
    args = parser.parse_args(argv)
    lines = ["# SliceGPT's knob and the parameters it removes", "",
             f"`python -m experiments.slicegpt_budget {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "Negative: the model grows (shortcut matrices, an untied head, Gemma's post-branch maps).", "",
             "| model | cut | width | non-embedding parameters removed | all parameters removed |",
             "|---|---|---|---:|---:|"]
    for name in args.models:
        lines += model_rows(name, tuple(args.knobs))
    text = "\n".join(lines) + "\n"
    if args.out:
        atomic_write_text(args.out, text)
    print(text)
    return text


if __name__ == "__main__":
    main()
