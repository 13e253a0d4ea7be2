"""Numbers from SliceGPT's own code, for tests/test_slicegpt.py: `layernorm_fusion.replace_layers` +
`fuse_modules` + `rotate.rotate_and_slice` (sequential, `ConstSlicingScheduler`, final_orientation "pca") run on
diet's tiny random Llama with fixed calibration batches, and the logits of the result on fixed inputs.

The reference pins transformers 4.41.0, which cannot be imported beside this project's transformers. So the run
has three steps, the middle one in an environment that has it (its code is never copied here; numbers only):

    python -m experiments.slicegpt_reference prepare --work /tmp/sgwork
    pip install --target /tmp/sgref_deps --no-deps transformers==4.41.0 tokenizers==0.19.1 \
        huggingface-hub==0.23.4 ml-collections==0.1.1 absl-py contextlib2
    PYTHONPATH=/tmp/sgref_deps python experiments/slicegpt_reference.py reference --work /tmp/sgwork \
        --reference /path/to/TransformerCompression
    python -m experiments.slicegpt_reference compare --work /tmp/sgwork --out tests/fixtures/slicegpt_reference.json

The `reference` step imports nothing from diet (it runs under the reference's transformers).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch

WIDTHS = (64, 40, 24)          # the tiny model's full width (zero slicing) and two slicings
LENGTHS = (24, 24, 17, 24, 20, 24)  # one ragged sequence: the PCA masks its padding
BATCH = 2
EPS = 1e-5  # the reference's RMSN eps: the tiny model is built with it (SmolLM2's own)
# transformers 4.41's Llama derives head_dim from hidden_size / heads: the tiny model is built that way
TINY = {"seed": 0, "rms_norm_eps": EPS, "head_dim": 16}
POSITIONS = (5, 19)            # the probe positions whose logits are kept (both rows)


def calibration() -> list[list[int]]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, 250, (n,), generator=generator).tolist() for n in LENGTHS]


def probe() -> torch.Tensor:
    return torch.randint(3, 250, (2, 20), generator=torch.Generator().manual_seed(1))


def prepare(work: Path) -> None:
    from diet.calib.layer_calls import batches_of
    from diet.models.tiny import tiny_llama

    work.mkdir(parents=True, exist_ok=True)
    model = tiny_llama(**TINY)
    batches = [{"input_ids": b.input_ids, "attention_mask": b.attention_mask}
               for b in batches_of(calibration(), BATCH, 0)]
    config = {key: value for key, value in model.config.to_dict().items()
              if key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                         "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "rope_theta",
                         "tie_word_embeddings", "pad_token_id", "bos_token_id", "eos_token_id")}
    config["rope_theta"] = model.config.rope_parameters["rope_theta"] if "rope_theta" not in config else config["rope_theta"]
    torch.save({"state": model.state_dict(), "config": config, "batches": batches, "probe": probe()},
               work / "inputs.pt")


def reference(work: Path, root: Path) -> None:
    """Under transformers 4.41: the reference's fusion and rotate_and_slice at each width, logits on the probe."""
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    assert transformers.__version__ == "4.41.0", transformers.__version__
    package = types.ModuleType("slicegpt")  # its __init__ imports every adapter and the datasets loaders
    package.__path__ = [str(root / "src" / "slicegpt")]
    sys.modules["slicegpt"] = package
    fusion = importlib.import_module("slicegpt.layernorm_fusion")
    rotate = importlib.import_module("slicegpt.rotate")
    scheduler = importlib.import_module("slicegpt.slicing_scheduler")
    llama = importlib.import_module("slicegpt.adapters.llama_adapter")
    config_module = importlib.import_module("slicegpt.config")
    config_module.config.device = torch.device("cpu")
    inputs = torch.load(work / "inputs.pt")
    config = LlamaConfig(**inputs["config"], attn_implementation="eager", torch_dtype=torch.float32)
    out = {}
    for width in WIDTHS:
        model = LlamaForCausalLM(config).eval()
        model.load_state_dict(inputs["state"])
        adapter = llama.LlamaModelAdapter(model)
        adapter.use_cache = False  # as hf_utils.get_model_and_tokenizer loads every model
        fusion.replace_layers(adapter)
        fusion.fuse_modules(adapter)
        batches = [{key: value.clone() for key, value in batch.items()} for batch in inputs["batches"]]
        rotate.rotate_and_slice(adapter, batches, scheduler.ConstSlicingScheduler(width), final_orientation="pca")
        with torch.no_grad():
            out[width] = model(inputs["probe"]).logits
    torch.save(out, work / "reference_logits.pt")
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    (work / "commit.txt").write_text(commit.strip() or "unknown")


def compare(work: Path, destination: Path) -> None:
    from diet.io import atomic_write_json

    logits = torch.load(work / "reference_logits.pt")
    atomic_write_json(destination, {
        "reference": "microsoft/TransformerCompression", "commit": (work / "commit.txt").read_text(),
        "procedure": "replace_layers, fuse_modules, rotate_and_slice(ConstSlicingScheduler(width), "
                     "final_orientation='pca') on tiny_llama(**TINY)", "tiny": TINY,
        "calibration_lengths": list(LENGTHS), "batch_size": BATCH, "positions": list(POSITIONS),
        "logits": {str(width): [[float(f"{x:.8g}") for x in row] for row in value[:, list(POSITIONS)].reshape(
            -1, value.shape[-1]).tolist()] for width, value in logits.items()}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "reference", "compare"])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--reference", type=Path, help="a TransformerCompression checkout (step reference)")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/slicegpt_reference.json"))
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.work)
    elif args.step == "reference":
        reference(args.work, args.reference)
    else:
        compare(args.work, args.out)
    print(json.dumps({"step": args.step, "work": str(args.work)}))


if __name__ == "__main__":
    main()
