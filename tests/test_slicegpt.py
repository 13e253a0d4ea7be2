"""SliceGPT (diet/methods/slicegpt.py, diet/prune/rotation.py) against what makes it exact and what does not.

At zero slicing every step but one is an exact invariance (norm folding, PCA rotations, shortcut matrices, the
untied head, Gemma's post-branch norms kept whole), so the rotated model's logits equal the original's within
float32 rounding (diet.rounding); a missing shortcut, an unfused norm or a wrong basis exceeds that bound. The
reference's embedding-mean subtraction is the step that is not exact on RMSNorm models: its departure is
measured here and must exceed the bound (it changes the model)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from diet.calib.layer_calls import batches_of
from diet.errors import DietConfigError
from diet.export.checkpoint import load_pruned, save_pruned
from diet.methods.slicegpt import SliceGPTOptions, rotate_and_slice, sliced_width
from diet.models.adapters import adapter_for, parameter_counts
from diet.models.tiny import tiny_gemma2, tiny_gemma3, tiny_llama
from diet.prune import rotation
from diet.rounding import logits_bound

# Gemma-3 with a sliding layer then a global one, a window shorter than the sequences: each layer must get its own
# attention mask (the reference reuses layer 0's)
BUILDS = {"llama": tiny_llama, "gemma2": lambda: tiny_gemma2(sliding_window=8),
          "gemma3": lambda: tiny_gemma3(sliding_window=8, layer_types=["sliding_attention", "full_attention"])}
EXACT = SliceGPTOptions(final_orientation="pca", embedding_mean="keep")


def calibration(seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 250, (n,), generator=generator).tolist() for n in (24, 24, 17, 24, 20, 24)]


def probe() -> torch.Tensor:
    return torch.randint(3, 250, (2, 20), generator=torch.Generator().manual_seed(1))


def rotated(model, width: int | None = None, options: SliceGPTOptions = EXACT, batch_size: int = 2):
    model = copy.deepcopy(model)
    rotate_and_slice(model, batches_of(calibration(), batch_size, 0), width or model.config.hidden_size, options, 0)
    return model


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(probe()).logits


@pytest.mark.parametrize("family", sorted(BUILDS))
@pytest.mark.parametrize("orientation", ["pca", "random"])
def test_rotation_without_slicing_keeps_the_logits(family, orientation):
    model = BUILDS[family]()
    reference = logits(model)
    out = logits(rotated(model, options=SliceGPTOptions(final_orientation=orientation, embedding_mean="keep")))
    assert (out - reference).abs().max() <= logits_bound(model, reference)


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_calibration_batches_do_not_change_the_rotation(family):
    model = BUILDS[family]()
    one, three = logits(rotated(model, 40, batch_size=1)), logits(rotated(model, 40, batch_size=3))
    assert (one - three).abs().max() <= logits_bound(model, one)


def _breaks(monkeypatch, model, name, replacement) -> float:
    monkeypatch.setattr(rotation, name, replacement)
    return float((logits(rotated(model)) - logits(model)).abs().max())


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_an_unfused_norm_is_caught(monkeypatch, family):
    model = BUILDS[family]()
    bound = logits_bound(model, logits(model))
    assert _breaks(monkeypatch, model, "scale_inputs", lambda linears, scale: None) > 10 * bound


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_a_missing_shortcut_is_caught(family):
    model = BUILDS[family]()
    reference = logits(model)
    broken = rotated(model)
    broken.model.layers[1].mlp_shortcut_Q = None
    assert (logits(broken) - reference).abs().max() > 10 * logits_bound(model, reference)


def test_pca_basis_is_the_damped_eigenbasis_in_decreasing_order():
    generator = torch.Generator().manual_seed(3)
    signals = [torch.randn(2, 5, 6, generator=generator) * torch.arange(1, 7) for _ in range(3)]
    masks = [None, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]), None]
    values, vectors = rotation.pca_basis(signals, masks)
    rows = [signals[0].reshape(-1, 6), signals[1][masks[1].bool()], signals[2].reshape(-1, 6)]
    x = torch.cat(rows).double()
    h = x.T @ x
    h = h + 0.01 * h.diag().mean() * torch.eye(6, dtype=torch.float64)
    assert torch.all(values[:-1] >= values[1:])
    assert torch.allclose(h @ vectors, vectors * values, atol=1e-9 * float(values[0]))
    assert torch.allclose(vectors.T @ vectors, torch.eye(6, dtype=torch.float64), atol=1e-12)


def test_the_leading_components_keep_more_than_the_trailing_ones():
    """A reversed eigenvector order (slicing the least principal components) is caught: at 5/8 of the width the
    model sliced with the PCA order stays closer to the original than with the reversed order."""
    model = tiny_llama()
    reference = logits(model)
    right = (logits(rotated(model, 40)) - reference).pow(2).mean()
    original = rotation.pca_basis

    def reversed_basis(signals, masks):
        values, vectors = original(signals, masks)
        return values.flip(0), vectors.flip(1)

    try:
        rotation.pca_basis = reversed_basis
        wrong = (logits(rotated(model, 40)) - reference).pow(2).mean()
    finally:
        rotation.pca_basis = original
    assert right < wrong


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_the_references_embedding_mean_step_is_not_an_invariance_on_rmsnorm_models(family):
    """fuse_modules subtracts each embedding row's mean for every family; exact for LayerNorm (OPT, Phi), not for
    RMSNorm: the departure at zero slicing is far above rounding (measured on the real models by
    experiments/slicegpt_invariance.py)."""
    model = BUILDS[family]()
    reference = logits(model)
    departure = (logits(rotated(model, options=SliceGPTOptions(embedding_mean="subtract"))) - reference).abs().max()
    assert departure > 100 * logits_bound(model, reference)


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_save_reload_keeps_logits_and_the_parameter_count_is_the_saved_tensors(family, tmp_path):
    from safetensors.torch import load_file

    model = rotated(BUILDS[family](), 40, SliceGPTOptions())
    save_pruned(model, None, tmp_path / "m")
    again, _, spec = load_pruned(tmp_path / "m")
    assert torch.equal(logits(model), logits(again))
    saved = sum(t.numel() for t in load_file(str(tmp_path / "m" / "model.safetensors")).values())
    assert parameter_counts(model)["total"] == parameter_counts(again)["total"] == saved
    assert spec["rotation"]["embedding"] == 40 and spec["rotation"]["layers"][-1]["output"] == model.config.hidden_size


@pytest.mark.parametrize("family", sorted(BUILDS))
def test_parameters_removed_are_the_slices_minus_the_shortcuts_and_the_untied_head(family):
    """The parameter count after slicing to d, from the shapes SliceGPT produces (tiny: 2 layers, D = 64)."""
    model = BUILDS[family]()
    adapter, d, big = adapter_for(model), 40, model.config.hidden_size
    sliced = rotated(model, d)
    expected = model.get_input_embeddings().weight.shape[0] * (d + big)  # embedding sliced, head of its own
    for index in range(adapter.num_layers()):
        a, m = adapter.attention(index), adapter.mlp(index)
        d_out = big if index == adapter.num_layers() - 1 else d
        branch = adapter.branch_norms[0] is not None
        expected += d * (a.q.out_features + a.k.out_features + a.v.out_features)  # q/k/v read d
        expected += d * (m.gate.out_features + m.up.out_features)
        if branch:  # o_proj / down_proj whole, the branch maps D -> d (attention) and D -> d_out (MLP)
            expected += a.o.weight.numel() + m.down.weight.numel() + big * d + big * d_out
        else:
            expected += d * a.o.in_features + d_out * m.down.in_features
        expected += d * d + d * d_out  # the two shortcut matrices
        expected += sum(p.numel() for name, p in adapter.layers()[index].self_attn.named_parameters()
                        if "norm" in name)  # Gemma-3's q_norm / k_norm act on head_dim: untouched
    assert parameter_counts(sliced)["total"] == expected


def test_sliced_width_is_the_references_rounding():
    assert sliced_width(576, 0.2, 8) == 456   # int(460.8) = 460 -> 456
    assert sliced_width(640, 0.2, 8) == 512
    assert sliced_width(2304, 0.25, 8) == 1728
    assert sliced_width(64, 0.3, 1) == 44


def test_bad_options_fail_before_any_model_loads():
    from diet.bind import bind

    with pytest.raises(DietConfigError, match="final_orientation"):
        bind(SliceGPTOptions, {"final_orientation": "svd"}, "method")
    with pytest.raises(DietConfigError, match="embedding_mean"):
        bind(SliceGPTOptions, {"embedding_mean": "center"}, "method")


def test_sparsity_of_params_is_refused(tmp_path):
    from diet.run.cell import resolve

    cfg = compose_config(["model=tiny_llama", "method=slicegpt", "dims=hidden", "sparsity_of=params",
                          "tasks=[arc_easy]", "wandb.mode=disabled"])
    with pytest.raises(DietConfigError, match="sparsity_of=params"):
        resolve(cfg)


REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "slicegpt_reference.json").read_text())


@pytest.mark.parametrize("width", sorted(REFERENCE["logits"], key=int))
def test_the_reference_code_gives_the_same_model(width):
    """microsoft/TransformerCompression's own replace_layers + fuse_modules + rotate_and_slice (final_orientation
    "pca", commit in the fixture) run on the same tiny Llama and calibration batches (experiments/
    slicegpt_reference.py): our rotated and sliced model's logits equal its logits within float32 rounding, at zero
    slicing (where both depart from the dense model by the embedding-mean step) and at two slicings."""
    from experiments.slicegpt_reference import TINY, calibration, probe

    assert REFERENCE["tiny"] == TINY and REFERENCE["calibration_lengths"] == [len(s) for s in calibration()]
    model = tiny_llama(**TINY)
    rotate_and_slice(model, batches_of(calibration(), REFERENCE["batch_size"], 0), int(width),
                     SliceGPTOptions(final_orientation="pca", embedding_mean="subtract"), 0)
    with torch.no_grad():
        ours = model(probe()).logits[:, REFERENCE["positions"]].reshape(-1, model.config.vocab_size)
    theirs = torch.tensor(REFERENCE["logits"][width])
    assert (ours - theirs).abs().max() <= logits_bound(tiny_llama(**TINY), theirs)


def test_a_shortcut_lives_on_its_layers_device_in_the_models_dtype():
    """PCA runs on the host in float64; the shortcut it gives must join the layer (a GPU layer in bfloat16 would
    otherwise multiply a host matrix). The meta device stands in for an accelerator here."""
    layer = tiny_llama().model.layers[0].to("meta")
    rotation.set_shortcut(layer, "attn_shortcut_Q", torch.eye(4, dtype=torch.float64), torch.bfloat16)
    assert layer.attn_shortcut_Q.device.type == "meta" and layer.attn_shortcut_Q.dtype == torch.bfloat16
