"""Weights & Biases logging: config, per-task metrics and a per-task table for every run, and the
saved pruned model as a model artifact when `export.wandb_artifact=true`.

`wandb.mode=offline` (the default) writes runs to disk and never touches the network;
`wandb sync` uploads them later. `disabled` turns logging off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _start_run(wandb_cfg: dict[str, Any], **settings: Any) -> tuple[Any, Any]:
    """(the wandb module, a new run) in `wandb_cfg`'s mode, project and folder."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    os.makedirs(wandb_cfg["dir"], exist_ok=True)
    settings.setdefault("group", wandb_cfg.get("group"))
    run = wandb.init(project=wandb_cfg["project"], entity=wandb_cfg.get("entity"), mode=wandb_cfg["mode"],
                     dir=wandb_cfg["dir"], reinit=True, **settings)
    return wandb, run


def log_run(record: dict[str, Any], wandb_cfg: dict[str, Any]) -> str | None:
    """Log one finished run; returns the W&B run directory (None when disabled)."""
    if wandb_cfg["mode"] == "disabled":
        return None
    wandb, run = _start_run(
        wandb_cfg,
        name=f"{record['model']['name']}-{record['method']}-s{record['sparsity']['target']:.2f}",
        config={"config": record["config"], "config_hash": record["config_hash"], "code": record["code"]},
        job_type=record["method"],
    )
    try:
        summary: dict[str, Any] = {f"{task}/{k}": v for task, m in record["tasks"].items() for k, v in m.items()
                                   if isinstance(v, (int, float))}
        summary["average"] = record["average"]["score"]
        summary["sparsity/actual"] = record["sparsity"]["actual"]
        for key, value in record["parameters"]["after"].items():
            summary[f"parameters/{key}"] = value
        for stage, seconds in record["timings"].items():
            summary[f"seconds/{stage}"] = seconds
        columns = ["task", "metric", "score", "stderr", "acc", "acc_norm", "n"]
        table = wandb.Table(columns=columns)
        for task, m in record["tasks"].items():
            table.add_data(task, m["metric"], m["score"], m.get("score_stderr"), m.get("acc"), m.get("acc_norm"), m["n"])
        run.log({**summary, "per_task": table})
        saved = record.get("saved_model")
        if saved and (record["config"].get("export") or {}).get("wandb_artifact"):
            run.log_artifact(model_artifact(wandb, saved, Path(saved["path"]).name))
        for recovery in record.get("recovery") or []:  # recover=lora: its loss curves, per tuned model
            prefix = f"recovery/{recovery['task'] or 'model'}"
            curves = {"train": wandb.Table(columns=["step", "loss", "lr"], data=recovery["train_curve"]),
                      "val": wandb.Table(columns=["step", "val_loss"], data=recovery["val_curve"])}
            run.log({f"{prefix}/train_loss": wandb.plot.line(curves["train"], "step", "loss", title=f"{prefix} train"),
                     f"{prefix}/val_loss": wandb.plot.line(curves["val"], "step", "val_loss", title=f"{prefix} val")})
            for key in ("val_loss_before", "val_loss_after", "tokens_seen", "seconds"):
                run.summary[f"{prefix}/{key}"] = recovery[key]
        if record.get("mask"):
            mask = record["mask"]
            run.summary["mask_hash"] = mask.get("mask_hash")
            kept = mask.get("kept_per_layer") or []
            layer_table = wandb.Table(columns=["layer", "kept_channels"], data=[[i, k] for i, k in enumerate(kept)])
            run.log({"mask/kept_per_layer": layer_table})
        return run.dir
    finally:
        run.finish()


def model_artifact(wandb: Any, saved: dict[str, Any], name: str) -> Any:
    """The saved pruned-model folder as a W&B model artifact (files by reference to their content)."""
    artifact = wandb.Artifact(name=name, type="model", metadata={k: v for k, v in saved.items() if k != "path"})
    artifact.add_dir(saved["path"])
    return artifact


def log_saved_model(saved: dict[str, Any], wandb_cfg: dict[str, Any], name: str, as_artifact: bool) -> str | None:
    """`export.wandb_artifact=true` on a prune-only run: log the saved folder in a W&B run of its own;
    returns the run directory (None when not asked or W&B is disabled)."""
    if not as_artifact or wandb_cfg["mode"] == "disabled":
        return None
    wandb, run = _start_run(wandb_cfg, name=f"prune-{name}", job_type="prune")
    try:
        run.log_artifact(model_artifact(wandb, saved, name))
        return run.dir
    finally:
        run.finish()


def log_tables(tables: list[Any], wandb_cfg: dict[str, Any]) -> list[str]:
    """Log each diet.analysis.tables.Table as a wandb.Table, one W&B run per table group; returns the run dirs."""
    if wandb_cfg["mode"] == "disabled":
        return []
    by_group: dict[str, list[Any]] = {}
    for table in tables:
        by_group.setdefault(table.group, []).append(table)
    run_dirs = []
    for group in sorted(by_group):
        wandb, run = _start_run(wandb_cfg, group=group, name=f"tables-{group}", job_type="tables")
        try:
            run.log({table.name: wandb.Table(dataframe=table.data) for table in by_group[group]})
            run_dirs.append(run.dir)
        finally:
            run.finish()
    return run_dirs
