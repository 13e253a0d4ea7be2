"""Numbers from LLM-Pruner's own code, for tests/test_llm_pruner.py: its block-wise Taylor pruning (llama3.py's
settings: `MetaPruner` with `TaylorImportance(group_reduction="sum", taylor=...)`, roots `mlp.gate_proj` of the
pruned layers) run on diet's tiny random Llama with fixed windows, and the MLP channels it removes.

Needs a checkout of https://github.com/horseee/LLM-Pruner (not part of this repository; its code is never copied
here) and writes only numbers:

    python -m experiments.llm_pruner_reference --reference /path/to/LLM-Pruner \
        --out tests/fixtures/llm_pruner_reference.json
"""

from __future__ import annotations

import argparse
import copy
import importlib
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch

from diet.io import atomic_write_json
from diet.models.tiny import tiny_llama

WINDOWS, LENGTH, SEED = 10, 64, 0  # the reference's 10 x 64 windows; ids drawn from the byte vocabulary
CASES = [(taylor, ratio, (0, 2)) for taylor in ("param_first", "vectorize", "param_second", "param_mix")
         for ratio in (0.2, 0.35, 0.5)] + [("param_first", 0.5, (1, 2))]


def windows() -> torch.Tensor:
    generator = torch.Generator().manual_seed(SEED)
    return torch.randint(4, 260, (WINDOWS, LENGTH), generator=generator)


def import_reference(root: Path) -> tuple[Any, Any]:
    """LLMPruner.torch_pruning and LLMPruner.pruner.hf_llama_pruner, without the package's __init__ (it imports
    every model family and their tokenizers, which need packages this environment lacks)."""
    package = types.ModuleType("LLMPruner")
    package.__path__ = [str(root / "LLMPruner")]
    sys.modules["LLMPruner"] = package
    return importlib.import_module("LLMPruner.torch_pruning"), importlib.import_module("LLMPruner.pruner.hf_llama_pruner")


def reference_pruner(tp: Any, pruner_lib: Any, model: Any, importance: Any, ratio: float, roots: list[Any]) -> Any:
    """llama3.py's block-wise MetaPruner (one step, local ratios, k_proj in consecutive groups of head_dim) over
    `roots`."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    layers = model.model.layers
    return tp.pruner.MetaPruner(
        model, windows()[:2, :8], output_transform=lambda out: out.logits,  # transformers returns a ModelOutput
        importance=importance, global_pruning=False, iterative_steps=1, ch_sparsity=ratio, ignored_layers=[],
        channel_groups={}, consecutive_groups={layer.self_attn.k_proj: layer.self_attn.head_dim for layer in layers},
        customized_pruners={LlamaRMSNorm: pruner_lib.hf_rmsnorm_pruner}, root_module_types=None,
        root_instances=roots)


def trainable_tiny_llama() -> Any:
    model = tiny_llama(seed=0).float()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def run_case(tp: Any, pruner_lib: Any, taylor: str, ratio: float, mlp_range: tuple[int, int]) -> dict[str, Any]:
    model = trainable_tiny_llama()
    before = [layer.mlp.gate_proj.weight.detach().clone() for layer in model.model.layers]
    example = windows()
    layers = model.model.layers
    pruner = reference_pruner(tp, pruner_lib, model, pruner_lib.TaylorImportance(group_reduction="sum", taylor=taylor),
                              ratio, [layers[i].mlp.gate_proj for i in range(*mlp_range)])
    model.zero_grad()
    if taylor in ("param_mix", "param_second"):  # llama3.py's per-sample loop
        for j in range(len(example)):
            batch = example[j].unsqueeze(0)
            model(batch, labels=batch).loss.backward()
            for p in model.parameters():
                p.grad = p.grad * p.grad / len(example)
                if hasattr(p, "acc_grad"):
                    p.acc_grad += p.grad
                else:
                    p.acc_grad = copy.deepcopy(p.grad)
            model.zero_grad()
    loss = model(example, labels=example).loss
    loss.backward()
    pruner.step()
    removed = []
    for old, layer in zip(before, layers):
        kept = {int((old == row).all(1).nonzero()[0]) for row in layer.mlp.gate_proj.weight.detach()}
        removed.append(sorted(set(range(old.shape[0])) - kept))
    return {"taylor": taylor, "ratio": ratio, "mlp_layers": list(mlp_range), "loss": float(loss.detach()),
            "removed": removed}


def kv_group_case(tp: Any, pruner_lib: Any, ratio: float = 0.5) -> dict[str, Any]:
    """The reference's KV-group pruning (roots `self_attn.k_proj`, consecutive groups of head_dim, llama3.py):
    per layer, the importance it gives each KV group (recorded from its own TaylorImportance) and the KV heads
    and query heads it keeps."""
    model = trainable_tiny_llama()
    head_dim = model.config.head_dim
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    importance = pruner_lib.TaylorImportance(group_reduction="sum", taylor="param_first")
    scores: list[list[float]] = []

    class Recording(type(importance)):  # the reference's own __call__, its output kept
        def __call__(self, group, **kwargs):
            out = super().__call__(group, **kwargs)
            scores.append([float(v) for v in out.view(-1, head_dim).sum(1)])
            return out

    importance.__class__ = Recording
    layers = model.model.layers
    example = windows()
    pruner = reference_pruner(tp, pruner_lib, model, importance, ratio, [layer.self_attn.k_proj for layer in layers])
    model.zero_grad()
    model(example, labels=example).loss.backward()
    pruner.step()

    def kept(layer: int, name: str, weight: torch.Tensor, columns: bool = False) -> list[int]:
        old = before[f"model.layers.{layer}.self_attn.{name}.weight"]
        old, weight = (old.T, weight.T) if columns else (old, weight)
        return sorted({int((old == row).all(1).nonzero()[0]) // head_dim for row in weight.detach()})

    return {"ratio": ratio, "taylor": "param_first", "group_scores": scores,
            "kept_kv_heads": [kept(i, "k_proj", layer.self_attn.k_proj.weight) for i, layer in enumerate(layers)],
            "kept_query_heads": [kept(i, "q_proj", layer.self_attn.q_proj.weight) for i, layer in enumerate(layers)],
            "kept_o_heads": [kept(i, "o_proj", layer.self_attn.o_proj.weight, columns=True)
                             for i, layer in enumerate(layers)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="a checkout of horseee/LLM-Pruner")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    commit = subprocess.run(["git", "-C", str(args.reference), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    tp, pruner_lib = import_reference(args.reference)
    cases = [run_case(tp, pruner_lib, *case) for case in CASES]
    payload = {"reference": {"repository": "horseee/LLM-Pruner", "commit": commit,
                             "entry": "llama3.py --block_wise --pruner_type taylor (MetaPruner + TaylorImportance)"},
               "model": "diet.models.tiny.tiny_llama(seed=0), float32",
               "windows": {"n": WINDOWS, "length": LENGTH, "seed": SEED, "ids": "torch.randint(4, 260)"},
               "command": "python -m experiments.llm_pruner_reference --reference <checkout> --out <this file>",
               "cases": cases, "kv_groups": kv_group_case(tp, pruner_lib)}
    atomic_write_json(args.out, payload)
    print(f"wrote {args.out}: {len(cases)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
