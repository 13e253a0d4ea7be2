"""How a cell is computed, never what it computes: the computation-only options, bound once into `Runtime`.

They stay where users write them (`eval.batch_size` beside the other evaluation options, `model.device` beside the
model, `threads` at the top), but the code reads them through `Runtime`, and a cell's identity leaves out exactly
the options `Runtime` names (`RUNTIME`), so such a knob never reaches a method (`select` receives its inputs; the
calibration batch size travels in the PruningContext) nor the hash. They change float summation order at most:
the fast backend equals stock lm-eval per request (tests/test_fast_eval.py), by_task and chunk_docs only batch a
task's requests apart (tests/test_task_results.py, tests/test_chunks.py), calibration batches are padding-aware
(tests/test_calibration.py); tests/test_identity.py perturbs each and finds the identity unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from diet.config.sections import CalibOptions, RunOptions


def _option(path: str) -> dict[str, str]:
    return {"option": path}


@dataclass(frozen=True)
class Runtime:
    device: str | None = field(metadata=_option("model.device"))
    eval_batch_size: int = field(metadata=_option("eval.batch_size"))
    backend: str = field(metadata=_option("eval.backend"))
    by_task: bool = field(metadata=_option("eval.by_task"))
    chunk_docs: int | None = field(metadata=_option("eval.chunk_docs"))
    calib_batch_size: int = field(metadata=_option("calib.batch_size"))
    threads: int | None = field(metadata=_option("threads"))


def _paths() -> list[tuple[str, str]]:
    """(section, key) of every Runtime field; "" is the top level."""
    return [tuple(f.metadata["option"].rpartition(".")[::2]) for f in dataclasses.fields(Runtime)]  # type: ignore[misc]


# section -> the options of it that never enter a cell's identity (diet.config.identity)
RUNTIME: dict[str, tuple[str, ...]] = {}
for _section, _key in _paths():
    RUNTIME[_section] = (*RUNTIME.get(_section, ()), _key)


def runtime_of(cfg: Mapping[str, Any], options: RunOptions) -> Runtime:
    """The runtime options of a run config whose fixed sections are bound (`options`)."""
    calib = options.calib or CalibOptions()  # a method that prunes nothing binds no calibration section
    return Runtime(device=cfg["model"].get("device"), eval_batch_size=options.eval.batch_size,
                   backend=options.eval.backend, by_task=options.eval.by_task, chunk_docs=options.eval.chunk_docs,
                   calib_batch_size=calib.batch_size, threads=cfg.get("threads"))
