"""Shared test helpers: the real Hydra configs, the real offline data folder, an isolated cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"  # never copied into the repository


@pytest.fixture(scope="session", autouse=True)
def own_task_example() -> Path:
    """The user task of README "Prune for your own tasks", written where experiment=own_task_local and its
    committed records read it (examples/own_task.py: deterministic, so their identities hold on any clone)."""
    import runpy

    folder = REPO_ROOT / ".cache" / "own_task"
    runpy.run_path(str(REPO_ROOT / "examples" / "own_task.py"))["main"](folder)
    return folder


def compose_config(overrides: list[str]) -> dict[str, Any]:
    """The resolved run config exactly as `python -m experiments.run <overrides>` builds it."""
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def left_padded_batch() -> dict[str, torch.Tensor]:
    """3 rows of 16 random byte-tokenizer ids, two of them left-padded (fixed seed)."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(4, 260, (3, 16), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :5] = 0  # left padding
    attention_mask[2, :1] = 0
    input_ids[attention_mask == 0] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def card_fractions(card: str) -> tuple[float, ...]:
    """(actual, non-embedding, total) removed fractions as a saved model's card (README.md) states them."""
    import re

    found = re.search(r"actual ([0-9.]+) of it, (-?[0-9.]+) of the non-embedding and (-?[0-9.]+) of all", card)
    assert found, card
    return tuple(float(x) for x in found.groups())


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


from diet.rounding import EPS32, depth_and_length, fp32_bound, logits_bound, loglikelihood_bound  # noqa: E402,F401


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A fresh $DIET_CACHE (profiles, converted models) for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DIET_CACHE", str(path))
    return path


@pytest.fixture(autouse=True)
def offline_data(monkeypatch) -> Path:
    monkeypatch.setenv("DIET_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return DATA_DIR


class MethodCall:
    """A method run on a hand-made config outside the pipeline: its inputs built from `cfg` exactly as
    diet.run.pipeline.select_cell builds them (diet.methods.inputs.build_inputs), a context with no data
    folder and a no-op timer."""

    def __init__(self, loaded: Any, cfg: dict[str, Any], tasks: list[str]) -> None:
        import contextlib

        from diet.methods import PruningContext

        self.cfg, self.tasks = cfg, list(tasks)
        self.ctx = PruningContext(loaded, None, lambda stage: contextlib.nullcontext())

    @property
    def notes(self) -> dict[str, Any]:
        return self.ctx.notes

    def inputs(self, method: str) -> Any:
        """`method`'s inputs; the config's method section may hold the keys of several methods (one config
        for DIET and FLAP): each method gets the ones it takes (its Options, its shared inputs)."""
        import dataclasses

        from diet.config.layout import LEGACY_SECTIONS
        from diet.methods import METHODS
        from diet.methods.inputs import build_inputs, section_keys

        legacy = [name for name in LEGACY_SECTIONS if name in self.cfg]
        assert not legacy, f"{legacy}: a method's protocol belongs in cfg['method'] (diet.config.layout)"
        chosen = METHODS.get(method)
        takes = {f.name for f in dataclasses.fields(chosen.Options)} | set(section_keys(chosen))
        section = {key: value for key, value in (self.cfg.get("method") or {}).items() if key in takes}
        return build_inputs(chosen, {**self.cfg, "method": section}, self.tasks)

    def select(self, method: str) -> Any:
        from diet.methods import METHODS

        return METHODS.get(method)().select(self.ctx, self.inputs(method))
