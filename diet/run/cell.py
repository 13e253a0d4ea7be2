"""One configured cell, resolved once: the checked config, its identity and hash, where its record and saved
model go. Every entry point (experiments.run, prune, plan, check_masks, check_rerun) starts with `resolve`,
so validate -> identity -> hash -> file names is written in one place and each fact is worked out once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from diet.config.identity import config_hash, identity
from diet.config.layout import current_layout
from diet.config.runtime import Runtime, runtime_of
from diet.config.sections import RunOptions
from diet.config.validate import CheckedConfig, validate
from diet.export.save import save_path
from diet.methods.inputs import build_inputs
from diet.run.records import find_existing, record_stem


@dataclass(frozen=True)
class Cell:
    """A run config resolved: read its facts here rather than working them out again from the dict."""

    cfg: Mapping[str, Any]       # the run config as composed (the record stores it as "config")
    checked: CheckedConfig       # what validation derived (method class, typed sections, tasks, data folder)
    inputs: Any                  # what the method's select receives (its Method.Inputs), hashed whole
    effective: dict[str, Any]    # what the result depends on (diet.config.identity): base sections + inputs
    config_hash: str             # their hash: the cell's identity
    stem: str                    # <model>__<method>__<hash>: the record's and a claim's file stem
    save_dir: Path | None        # where save_model puts the pruned model; None: not saved
    runtime: Runtime             # how it is computed (device, batch sizes, backend, by_task, threads): never hashed

    @property
    def method(self) -> type:
        return self.checked.method

    @property
    def options(self) -> RunOptions:
        return self.checked.options

    @property
    def tasks(self) -> list[str]:
        return self.checked.tasks

    @property
    def calib_tasks(self) -> list[str]:
        return self.checked.calib_tasks

    @property
    def data_dir(self) -> Path | None:
        return self.checked.data_dir

    @property
    def model_name(self) -> str:
        return str(self.cfg["model"]["name"])

    @property
    def results_dir(self) -> Path:
        return Path(self.cfg["results_dir"])

    @property
    def force(self) -> bool:
        return bool(self.cfg.get("force", False))

    def finished_record(self) -> Path | None:
        """The record of this identity already in results_dir (None when there is none, or force=true)."""
        if self.force or not self.results_dir.is_dir():
            return None
        return find_existing(self.results_dir, self.method.name, self.model_name, self.config_hash)


def resolve(cfg: Mapping[str, Any]) -> Cell:
    """Validate `cfg` (fails in seconds, before any model is loaded) and resolve its identity and paths. A stored
    record's config is read in today's layout (diet.config.layout)."""
    cfg = current_layout(cfg)
    checked = validate(cfg)
    inputs = build_inputs(checked.method, cfg, checked.calib_tasks)
    checked.method.check_inputs(inputs)
    effective = identity(cfg, checked.tasks, checked.method, inputs, checked.recovery)
    cfg_hash = config_hash(effective)
    stem = record_stem(checked.method.name, cfg["model"]["name"], cfg_hash)
    return Cell(cfg=cfg, checked=checked, inputs=inputs, effective=effective, config_hash=cfg_hash, stem=stem,
                save_dir=save_path(cfg, stem), runtime=runtime_of(cfg, checked.options))
