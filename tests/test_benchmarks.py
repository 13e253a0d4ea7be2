"""The benchmark scripts run end to end on the tiny model and report consistent measurements.

Speeds are not asserted (timings belong in the scripts' reports, not in tests); what is asserted is
what each report must get right whatever the machine: shapes after pruning, exact FLOP counts,
parameter accounting, and that the profile state does not grow with the number of tokens.
"""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from benchmarks import profile_overhead, pruned_speed  # noqa: E402


def test_profile_overhead_reports_timing_and_token_independent_state(tmp_path):
    report = profile_overhead.main(["--model", "tiny_gemma2", "--tasks", "arc_easy", "--n", "4",
                                    "--repeats", "2", "--scale", "3", "--out", str(tmp_path)])
    timing = report["timing"]
    assert len(timing["plain_seconds"]) == len(timing["profile_seconds"]) == 2
    assert all(t > 0 for t in timing["plain_seconds"] + timing["profile_seconds"])
    assert timing["ratio_min"] <= timing["ratio_median"] <= timing["ratio_max"]
    one, three = report["memory"]
    assert three["tokens"] == 3 * one["tokens"] and three["sequences"] == 3 * one["sequences"]
    # fixed-size running sums: 3x the tokens, the very same number of bytes
    assert three["profile_state_bytes"] == one["profile_state_bytes"] > 0
    written = json.loads((tmp_path / "profile_overhead.json").read_text())
    assert written["timing"]["tokens"] == timing["tokens"]
    assert "Overhead profile / plain" in (tmp_path / "profile_overhead.md").read_text()


def test_pruned_speed_counts_shapes_parameters_and_flops(tmp_path):
    from diet.models.tiny import tiny_gemma2

    report = pruned_speed.main(["--models", "tiny_gemma2", "--sparsities", "0.5,0.25", "--seq-len", "16",
                                "--batch-size", "2", "--repeats", "1", "--out", str(tmp_path)])
    steps = report["models"]["tiny_gemma2"]["steps"]
    assert list(steps) == ["dense", "0.25", "0.5"]  # increasing sparsity, pruned in place
    model = tiny_gemma2()
    cfg = model.config
    width = cfg.intermediate_size
    for step in steps.values():
        kept = round(width * (1 - step["sparsity"]))
        assert step["mlp_widths"] == [kept] * cfg.num_hidden_layers
        # every linear on every token, except the LM head on the last position of each row
        q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
        per_token_layer = 2 * cfg.hidden_size * (2 * q + 2 * kv + 3 * kept)
        expected = 2 * 16 * cfg.num_hidden_layers * per_token_layer + 2 * 2 * cfg.hidden_size * cfg.vocab_size
        assert step["linear_flops"] == expected
        removed = cfg.num_hidden_layers * 3 * cfg.hidden_size * (width - kept)
        assert steps["dense"]["parameters"]["total"] - step["parameters"]["total"] == removed
    assert 1.0 == steps["dense"]["speedup_ideal"] < steps["0.25"]["speedup_ideal"] < steps["0.5"]["speedup_ideal"]
    assert "measured speed-up" in (tmp_path / "pruned_speed.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--sparsities", "0.2,1.5"], "strictly between 0 and 1"),
    (["--sparsities", "half"], "comma-separated numbers"),
    (["--repeats", "0"], "--repeats must be >= 1"),
])
def test_pruned_speed_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        pruned_speed.parse_args(argv)
    assert message in capsys.readouterr().err


def test_pruned_speed_rejects_unknown_model():
    with pytest.raises(SystemExit, match="unknown model 'gemma9'.*gemma2_2b_shape"):
        pruned_speed.main(["--models", "gemma9"])


def test_gpu_check_runs_every_stage_on_a_tiny_model(tmp_path):
    """benchmarks/gpu_check.py as prepared for a GPU, here on the CPU with a tiny Gemma-2: every stage, the
    pruned widths, and fast vs stock identical on the same requests (float32)."""
    from benchmarks import gpu_check

    report = gpu_check.main(["--device", "cpu", "--tiny", "--profile-tokens", "1000", "--eval-docs", "3",
                             "--out", str(tmp_path)])
    tiny = report["shapes"]["tiny"]
    assert set(tiny["stages"]) == {"build", "profile", "masks", "prune_0.2", "export_0.2", "recover_0.2", "prune_0.5",
                                   "fast_vs_stock"}
    assert tiny["pruned"]["0.2"]["export"]["format"] == "transformers"  # uniform widths: a stock checkpoint
    recovery = tiny["pruned"]["0.2"]["recovery"]
    assert recovery["losses_finite"] and recovery["parameters_kept"] and recovery["tokens_per_s"] > 0
    assert tiny["profile_tokens"] == 1000 and tiny["precision"] == {"dtype": "float32"}
    width = gpu_check.TINY["intermediate_size"]
    assert tiny["pruned"]["0.2"]["mlp_widths"] == [width - round(0.2 * width)]
    assert tiny["pruned"]["0.5"]["mlp_widths"] == [width // 2]
    evaluation = tiny["fast_vs_stock"]
    assert evaluation["identical_predictions"] and evaluation["requests"] > 0
    assert evaluation["within_rounding_bound"] and 0 <= evaluation["max_diff_over_bound"] <= 1
    assert "fast vs stock on" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_needs_no_data_folder_and_skips_only_what_does_not_fit(tmp_path, monkeypatch):
    """A GPU machine with only the repository: hand-made documents in the tasks' schema; a shape the device's
    memory cannot hold is skipped with both figures, never for time."""
    from benchmarks import gpu_check

    monkeypatch.setenv("DIET_DATA_DIR", str(tmp_path / "no-data-here"))
    monkeypatch.setattr(gpu_check, "local_data_dir", lambda: None)
    report = gpu_check.main(["--device", "cpu", "--tiny", "--dtype", "bfloat16", "--profile-tokens", "500",
                             "--eval-docs", "3", "--out", str(tmp_path)])
    assert report["data"].startswith("hand-made") and not report["skipped"]
    evaluation = report["shapes"]["tiny"]["fast_vs_stock"]
    assert evaluation["requests"] == 2 * 3 * 4 and evaluation["within_rounding_bound"]  # bf16 bound, bf16 model
    assert "hand-made documents" in (tmp_path / "gpu_check.md").read_text()
    monkeypatch.setattr(gpu_check, "memory_free", lambda device: 1 << 20)
    report = gpu_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "small")])
    assert not report["shapes"] and "GiB free on cpu" in report["skipped"]["tiny"]
    from diet.models.tiny import GEMMA2_SHAPES, tiny_gemma2

    assert gpu_check.shape_parameters(gpu_check.TINY) == sum(
        p.numel() for p in tiny_gemma2(**gpu_check.TINY).parameters())
    assert 9.2e9 < gpu_check.shape_parameters(GEMMA2_SHAPES["9b"]) < 9.3e9


def test_gpu_check_compares_bfloat16_masks_with_float32(tmp_path):
    from benchmarks import gpu_check

    report = gpu_check.main(["--device", "cpu", "--tiny", "--dtype", "bfloat16", "--profile-tokens", "1000",
                             "--eval-docs", "2", "--tasks", "arc_easy", "--out", str(tmp_path)])
    precision = report["shapes"]["tiny"]["precision"]
    assert precision["dtype"] == "bfloat16" and "profile_float32" in report["shapes"]["tiny"]["stages"]
    assert all(0.0 < j <= 1.0 for j in precision["mask_jaccard_vs_float32"].values())
    evaluation = precision["evaluation_vs_float32"]  # bfloat16 rounding moves loglikelihoods: reported
    assert evaluation["requests"] == 8 and evaluation["documents"] == 2
    assert evaluation["max_abs_loglikelihood_diff"] > 0 and set(evaluation["acc_float32"]) == {"arc_easy"}
    assert "known difference, bfloat16 vs float32" in (tmp_path / "gpu_check.md").read_text()


def test_gpu_check_refuses_cuda_without_a_device():
    import torch

    from benchmarks import gpu_check

    if torch.cuda.is_available():  # on a GPU machine the check itself is the test
        return
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_check.main(["--device", "cuda"])


def _scale_e2e(tmp_path, methods: str) -> dict:
    """The issue's reduced form: 2 layers of the real Gemma-2 2B widths (hidden 2304, MLP 9216, head_dim 256,
    soft-capping, 256k vocabulary) through run_cell, then the saved folder reloaded and evaluated by both
    backends."""
    from benchmarks import scale_e2e

    report = scale_e2e.main(["--shape", "2b", "--layers", "2", "--methods", methods, "--tasks", "arc_easy",
                             "--docs", "2", "--calib-n", "2", "--threads", "1", "--work", str(tmp_path / "work"),
                             "--out", str(tmp_path)])
    assert json.loads((tmp_path / "scale_e2e_2b_2layers.json").read_text())["shape"] == "2b"
    for result in report["methods"].values():
        assert {"load_model", "profile", "mask", "prune", "save_model", "evaluate"} <= set(result["timings"])
        assert set(result["peak_memory_gib"]) == set(result["timings"])
        assert all(v > 0 for v in result["peak_memory_gib"].values())
        backends = result["backends"]
        assert backends["requests"] == 8 and backends["identical_predictions"] and backends["within_bound"]
        assert backends["reload_reproduces_record"] == {"fast": True, "stock": True}
        assert result["saved_parameters"] == result["parameters"]["after"]["total"]
    return report


def test_scale_e2e_runs_the_whole_diet_cell_at_the_real_2b_widths(tmp_path, isolated_cache):
    diet = _scale_e2e(tmp_path, "diet")["methods"]["diet"]
    assert diet["shapes"]["mlp_widths"] == [4608, 4608] and diet["shapes"]["query_heads"] == [4, 4]
    assert diet["shapes"]["layer0"]["self_attn.q_proj.weight"] == [4 * 256, 2304]
    assert diet["saved_model"]["format"] == "transformers"  # uniform: a plain checkpoint, verified on export


@pytest.mark.scale
def test_scale_e2e_runs_the_whole_flap_cell_at_the_real_2b_widths(tmp_path, isolated_cache):
    flap = _scale_e2e(tmp_path, "flap")["methods"]["flap"]
    assert flap["saved_model"]["format"] == "diet-spec" and "bias" in flap["saved_model"]["why"]  # Gemma: no MLP bias
    assert len(set(flap["shapes"]["mlp_widths"])) == 2  # FLAP's global allocation


def test_scale_e2e_meta_mode_prunes_the_9b_layout_without_weights(tmp_path):
    from benchmarks import scale_e2e

    report = scale_e2e.main(["--shape", "9b", "--meta", "--out", str(tmp_path)])
    meta = report["meta"]
    removed = meta["parameters"]["before"]["total"] - meta["parameters"]["after"]["total"]
    # half of every layer's MLP (3 matrices) and half of its query heads (q rows and o columns), 42 layers
    assert removed == 42 * (3 * 3584 * 7168 + 2 * 8 * 256 * 3584)
    assert meta["shapes"]["mlp_widths"] == [7168] * 42 and meta["shapes"]["query_heads"] == [8] * 42
    assert meta["stock_config"] == {"intermediate_size": 7168, "num_attention_heads": 8}
    assert "evaluation" in report["not_run"] and (tmp_path / "scale_e2e_9b_meta.md").exists()


def test_gpu_check_precision_only_mode(tmp_path):
    from benchmarks import gpu_check

    report = gpu_check.main(["--device", "cpu", "--tiny", "--dtype", "bfloat16", "--precision-only",
                             "--profile-tokens", "500", "--eval-docs", "1", "--tasks", "arc_easy", "--out", str(tmp_path)])
    tiny = report["shapes"]["tiny"]
    assert set(tiny["stages"]) == {"build", "profile", "masks", "profile_float32", "eval_low_precision", "eval_float32"}
    assert tiny["precision"]["evaluation_vs_float32"]["requests"] == 4
    assert "precision only" in (tmp_path / "gpu_check.md").read_text()
