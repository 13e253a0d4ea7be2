"""Recovery fine-tuning (recover=lora, diet/recover/): merge equals the adapter model, tuning lowers the held-out
loss, a cut-off run resumes to the same weights, the options are the identity, bad values fail before loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import compose_config
from diet import models
from diet.calib.generic_text import read_source
from diet.config.validate import validate
from diet.errors import DietConfigError
from diet.recover import lora as lora_module
from diet.recover import state as state_module
from diet.recover.data import recovery_windows, split_text
from diet.recover.lora import decoder_linears, recover, validation_loss, wrap
from diet.recover.options import COMPUTATION_ONLY, LoraRecovery, recovery_plan
from diet.rounding import logits_bound
from diet.run.cell import resolve
from diet.run.pipeline import run_cell

TINY = ["model=tiny_llama", "tasks=[arc_easy,rte]", "eval.limit=6", "calib.n=6", "wandb.mode=disabled"]
SMALL = ["recover=lora", "recover.windows=48", "recover.val_windows=16", "recover.window_length=32",
         "recover.batch_size=8", "recover.lr=0.01", "recover.val_every=2", "recover.checkpoint_every=2"]


def plan_and_model(*overrides: str):
    cfg = compose_config([*TINY, "method=diet", *SMALL, *overrides])
    loaded = models.load_model(cfg["model"])
    return recovery_plan(cfg, prunes=True), loaded


def test_merged_model_equals_the_adapter_model_and_keeps_its_shapes():
    plan, loaded = plan_and_model()
    model = loaded.model
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    count = sum(p.numel() for p in model.parameters())
    peft_model = wrap(model, plan)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B starts at zero (LoRA's init): give the adapters something to merge
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
    peft_model.eval()
    batch = torch.randint(3, 200, (2, 24), generator=generator)
    with torch.no_grad():
        adapted = peft_model(input_ids=batch).logits
    merged = peft_model.merge_and_unload()
    assert merged is model
    with torch.no_grad():
        after = model(input_ids=batch).logits
    assert (after - adapted).abs().max().item() <= logits_bound(model, adapted)
    assert not torch.allclose(after, models.load_model(compose_config(TINY)["model"]).model(input_ids=batch).logits)
    assert {name: tuple(p.shape) for name, p in model.named_parameters()} == shapes
    assert sum(p.numel() for p in model.parameters()) == count
    assert all(type(module) is torch.nn.Linear for name, module in model.named_modules() if name.endswith("proj"))


def test_lora_covers_every_decoder_projection_and_nothing_else():
    plan, loaded = plan_and_model()
    names = decoder_linears(loaded.model)
    assert len(names) == 7 * loaded.model.config.num_hidden_layers
    assert not any("embed" in name or "lm_head" in name for name in names)


def test_recovery_lowers_the_held_out_loss_and_reports_it():
    plan, loaded = plan_and_model("recover.warmup_fraction=0.34")  # 2 warm-up steps of 6
    result = recover(loaded.model, loaded.tokenizer, plan, "cpu", None, "fp")
    assert result.val_loss_after < result.val_loss_before  # a frozen adapter or a broken optimizer: equal or higher
    assert result.steps == 6 and result.tokens_seen == 48 * 32 and len(result.train_curve) == 6
    assert [step for step, _ in result.val_curve] == [2, 4, 6] and result.val_curve[-1][1] == result.val_loss_after
    _, val = recovery_windows(plan.file, loaded.tokenizer, 48, 16, 32, plan.seed, True)
    assert validation_loss(loaded.model, torch.tensor(val.sequences), 8) == pytest.approx(result.val_loss_after,
                                                                                           rel=1e-5)
    rates = [rate for _, _, rate in result.train_curve]  # linear warm-up from 0, then linear decay towards 0
    assert rates == pytest.approx([0.0, 0.005, 0.01, 0.0075, 0.005, 0.0025])


def test_a_cut_off_recovery_resumes_to_the_same_weights(tmp_path, monkeypatch):
    plan, loaded = plan_and_model()
    recover(loaded.model, loaded.tokenizer, plan, "cpu", None, "fp")
    uninterrupted = {name: p.detach().clone() for name, p in loaded.model.state_dict().items()}

    _, loaded = plan_and_model()
    checkpoint, saves = tmp_path / "recover" / "model.pt", []
    real_save = state_module.save_state

    def save_then_stop(path, state, *args):
        real_save(path, state, *args)
        saves.append(state.step)
        if state.step == 4:
            raise KeyboardInterrupt  # the job is killed right after its second checkpoint

    monkeypatch.setattr(lora_module, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        recover(loaded.model, loaded.tokenizer, plan, "cpu", checkpoint, "fp")
    monkeypatch.setattr(lora_module, "save_state", real_save)
    assert saves == [2, 4] and checkpoint.is_file()

    _, loaded = plan_and_model()  # a fresh process: the pruned model loaded again
    result = recover(loaded.model, loaded.tokenizer, plan, "cpu", checkpoint, "fp")
    assert result.resumed_from_step == 4 and result.steps == 6 and len(result.train_curve) == 6
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, uninterrupted[name]), name

    _, loaded = plan_and_model()  # another run's checkpoint (other weights) is never resumed
    other = recover(loaded.model, loaded.tokenizer, plan, "cpu", checkpoint, "other weights")
    assert other.resumed_from_step == 0


def test_held_out_text_is_disjoint_and_the_same_for_every_seed():
    plan, loaded = plan_and_model()
    split = split_text(read_source(plan.file))
    assert not set(split.train) & set(split.val) and len(split.val) > 0
    _, val0 = recovery_windows(plan.file, loaded.tokenizer, 8, 4, 32, 0, True)
    train1, val1 = recovery_windows(plan.file, loaded.tokenizer, 8, 4, 32, 1, True)
    assert val0.sequences == val1.sequences and train1.sequences != recovery_windows(
        plan.file, loaded.tokenizer, 8, 4, 32, 0, True)[0].sequences


def cell_hash(*overrides: str) -> str:
    return resolve(compose_config([*TINY, *overrides])).config_hash


def test_recovery_options_are_the_identity_and_none_changes_nothing():
    base = cell_hash("method=diet")
    stored = compose_config([*TINY, "method=diet"])
    stored.pop("recover")  # a record's config from before recovery existed
    assert resolve(stored).config_hash == base == cell_hash("method=diet", "recover=none")
    recovered = cell_hash("method=diet", "recover=lora")
    assert recovered != base
    assert cell_hash("method=diet", "recover=lora_slicegpt") != recovered
    changed = {"rank": 4, "alpha": 8.0, "dropout": 0.1, "lr": 0.001, "weight_decay": 0.1, "betas": "[0.8,0.9]",
               "warmup_fraction": 0.1, "max_grad_norm": "null", "source": "wikitext2_test", "windows": 512,
               "window_length": 64, "val_windows": 32, "batch_size": 4, "epochs": 2}
    kept = {"val_every": 5, "checkpoint_every": 3}
    assert set(changed) | set(kept) | {"dense_control", "name"} == set(LoraRecovery.__dataclass_fields__)
    assert set(kept) | {"dense_control"} == set(COMPUTATION_ONLY)
    for key, value in changed.items():
        assert cell_hash("method=diet", "recover=lora", f"recover.{key}={value}") != recovered, key
    for key, value in kept.items():
        assert cell_hash("method=diet", "recover=lora", f"recover.{key}={value}") == recovered, key
    assert cell_hash("method=diet", "recover=lora", "seed=1") != cell_hash("method=diet", "recover=lora", "seed=2")
    assert cell_hash("method=diet", "recover=lora", "recover.alpha=16",
                     "recover.weight_decay=0", "recover.betas=[0.9,0.999]") == recovered  # ints and floats: one recipe
    assert cell_hash("method=dense", "recover=lora", "recover.dense_control=true") != cell_hash("method=dense")


@pytest.mark.parametrize("overrides, message", [
    (["recover.rank=0"], r"recover.rank=0 is not allowed"),
    (["recover.lr=0"], r"recover.lr=0 is outside the allowed range \(0.0, inf\)"),
    (["recover.lr=-1e-4"], r"recover.lr=-0.0001 is outside"),
    (["recover.dropout=1.0"], r"recover.dropout=1.0 is outside"),
    (["recover.betas=[0.9]"], r"recover.betas=\[0.9\] is not allowed"),
    (["recover.windows=100000"], r"recover.windows=100000 x recover.window_length=128 .* more than the training part"),
    (["recover.val_windows=5000"], r"recover.val_windows=5000 .* held-out part"),
    (["recover.source=/nonexistent.txt"], r"recover.source='/nonexistent.txt': no such file"),
    (["method=dense"], r"recover=lora with method=dense .* recover.dense_control=true"),
    (["+recover.rnak=4"], r"recover.rnak is not an option: allowed recover.name, recover.rank"),
])
def test_bad_recovery_input_fails_before_the_model_loads(overrides, message, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DietConfigError, match=message):
        validate(compose_config([*TINY, "method=diet", "recover=lora", *overrides]))


def test_a_recovered_cell_end_to_end(tmp_path, isolated_cache):
    """prune -> recover -> save -> evaluate -> record: same shapes as the unrecovered cell, its own identity,
    the saved model is the recovered one, nothing left in the partial folder."""
    from diet.export.reload import load_saved

    results = tmp_path / "records"
    common = [*TINY, "method=diet", "sparsity=0.25", f"results_dir={results}"]
    plain, _ = run_cell(compose_config([*common, f"save_model={tmp_path / 'plain'}"]))
    record, path = run_cell(compose_config([*common, *SMALL, f"save_model={tmp_path / 'tuned'}"]))
    assert record["config_hash"] != plain["config_hash"]
    assert record["parameters"]["after"] == plain["parameters"]["after"]
    assert record["mask"]["mask_hash"] == plain["mask"]["mask_hash"]  # the same pruned model was tuned
    [recovery] = record["recovery"]
    assert recovery["val_loss_after"] < recovery["val_loss_before"] and recovery["task"] is None
    assert recovery["plan"]["rank"] == 8 and recovery["plan"]["seed"] == 0 and "recover" in record["timings"]
    assert record["effective_config"]["recover"].items() <= recovery["plan"].items()
    assert json.loads(path.read_text())["recovery"][0]["steps"] == 6
    assert "recovery fine-tuning" in (tmp_path / "tuned" / "README.md").read_text()
    assert not any((results / ".partial").glob("*")) if (results / ".partial").exists() else True
    saved, tuned = plain["saved_model"], record["saved_model"]
    assert saved["format"] == tuned["format"] and saved["weights_sha256"] != tuned["weights_sha256"]
    reloaded, _ = load_saved(tuned)
    assert sum(p.numel() for p in reloaded.parameters()) == record["parameters"]["after"]["total"]


def test_an_oracle_recovers_each_task_model(tmp_path, isolated_cache):
    record, _ = run_cell(compose_config([*TINY, "method=diet_oracle", "sparsity=0.25", f"results_dir={tmp_path}",
                                         *SMALL]))
    assert [run["task"] for run in record["recovery"]] == ["arc_easy", "rte"]


def test_a_cell_cut_off_during_recovery_resumes_there(tmp_path, isolated_cache, monkeypatch):
    """run_cell killed after a recovery checkpoint, run again: it resumes from that step (the claim released, the
    checkpoint kept) and records what an uninterrupted run records."""
    overrides = [*TINY, "method=diet", "sparsity=0.25", *SMALL]
    whole, _ = run_cell(compose_config([*overrides, f"results_dir={tmp_path / 'whole'}"]))
    real_save = state_module.save_state

    def save_then_stop(path, state, *args):
        real_save(path, state, *args)
        if state.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(lora_module, "save_state", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_cell(compose_config([*overrides, f"results_dir={tmp_path / 'cut'}"]))
    monkeypatch.setattr(lora_module, "save_state", real_save)
    resumed, _ = run_cell(compose_config([*overrides, f"results_dir={tmp_path / 'cut'}"]))
    assert resumed["recovery"][0]["resumed_from_step"] == 2
    assert resumed["recovery"][0]["train_curve"] == whole["recovery"][0]["train_curve"]
    assert {task: m["outcomes"] for task, m in resumed["tasks"].items()} == \
        {task: m["outcomes"] for task, m in whole["tasks"].items()}


@pytest.mark.real_model
@pytest.mark.parametrize("model", ["gemma3_270m", "smollm2_135m"])
def test_real_models_recover_end_to_end(model, tmp_path):
    """Both real models: prune, recover (a few steps), save, evaluate, record; the held-out loss falls."""
    record, _ = run_cell(compose_config([
        f"model={model}", "method=diet", "sparsity=0.2", "tasks=[arc_easy]", "calib.n=4", "eval.limit=4",
        "recover=lora", "recover.windows=16", "recover.val_windows=4", "recover.window_length=64",
        "recover.lr=0.001", "recover.val_every=2", f"results_dir={tmp_path / 'records'}",
        f"save_model={tmp_path / 'saved'}", "wandb.mode=disabled"]))
    [recovery] = record["recovery"]
    assert recovery["steps"] == 2 and recovery["val_loss_after"] < recovery["val_loss_before"]
    assert recovery["trainable_parameters"] > 0 and record["saved_model"]["weights_sha256"]


def test_wandb_logs_the_recovery_curves_offline(tmp_path, isolated_cache):
    from diet.run.tracking import log_run

    record, _ = run_cell(compose_config([*TINY, "method=diet", "sparsity=0.25", f"results_dir={tmp_path}", *SMALL]))
    folder = log_run(record, {"mode": "offline", "project": "diet", "entity": None, "group": None,
                              "dir": str(tmp_path / "wandb")})
    [train] = (Path(folder) / "media" / "table" / "recovery" / "model").glob("train_loss_table_*.json")  # run.dir
    assert json.loads(train.read_text())["data"] == record["recovery"][0]["train_curve"]
    [stream] = Path(folder).parent.glob("run-*.wandb")  # the offline run's summary keys
    assert b"recovery/model/val_loss_after" in stream.read_bytes()


def test_prune_only_recovers_before_saving(tmp_path, isolated_cache):
    """experiments.prune (prune and save, no evaluation) tunes the model before saving it, and keeps no checkpoint."""
    from diet.run.pipeline import prune_cell

    common = [*TINY, "method=diet", "sparsity=0.25", f"results_dir={tmp_path / 'records'}"]
    plain = prune_cell(compose_config([*common, f"save_model={tmp_path / 'plain'}"]))
    tuned = prune_cell(compose_config([*common, *SMALL, f"save_model={tmp_path / 'tuned'}"]))
    assert tuned["config_hash"] != plain["config_hash"] and "recover" in tuned["timings"]
    assert tuned["weights_sha256"] != plain["weights_sha256"]
    assert tuned["parameters_after"] == plain["parameters_after"]
    assert not (tmp_path / "records" / ".partial").exists() or not any((tmp_path / "records" / ".partial").rglob("*.pt"))


@pytest.mark.parametrize("model, method, extra", [
    ("tiny_gemma3", "slicegpt", ["dims=hidden", "calib.source=c4", "calib.windows=4", "calib.window_length=64"]),
    ("tiny_gemma2", "shortgpt", ["sparsity=0.6", "calib.source=c4", "calib.windows=4", "calib.window_length=64"]),
    ("tiny_gemma2", "flap", []),
])
def test_recovery_after_every_kind_of_surgery(model, method, extra, tmp_path, isolated_cache):
    """Rotated layers with Gemma's post-branch maps (SliceGPT), dropped layers (ShortGPT), a compensation bias
    (FLAP): recovery adapts what is there, keeps the parameter count, and the saved model reloads."""
    from diet.export.reload import load_saved

    record, _ = run_cell(compose_config([f"model={model}", "tasks=[arc_easy,rte]", "eval.limit=4", "calib.n=4",
                                         "calib.max_length=64", "wandb.mode=disabled", f"method={method}",
                                         "sparsity=0.25", *extra, *SMALL, f"results_dir={tmp_path / 'records'}",
                                         f"save_model={tmp_path / 'saved'}"]))
    [recovery] = record["recovery"]
    assert recovery["trainable_parameters"] > 0 and recovery["val_loss_after"] < recovery["val_loss_before"]
    reloaded, _ = load_saved(record["saved_model"])
    assert sum(p.numel() for p in reloaded.parameters()) == record["parameters"]["after"]["total"]


def test_the_plan_estimates_a_recovered_cell_from_recovered_records_only(tmp_path, isolated_cache):
    from diet.run.plan import plan_cells

    results = tmp_path / "records"
    common = [*TINY, "method=diet", f"results_dir={results}"]
    run_cell(compose_config([*common, "sparsity=0.25"]))
    planned = [(["sparsity=0.5"], compose_config([*common, "sparsity=0.5", *SMALL]))]
    [cell] = plan_cells(planned, results, "cpu").cells
    assert cell.estimate_s is None and "no finished cpu record" in cell.basis  # the unrecovered one is not used
    recovered, _ = run_cell(compose_config([*common, "sparsity=0.25", *SMALL]))
    [cell] = plan_cells(planned, results, "cpu").cells
    assert "diet+recover" in cell.basis and cell.estimate_s >= recovered["timings"]["recover"]
