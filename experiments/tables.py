"""Regenerate every paper table and figure from a folder of records (never loads a model).

    python -m experiments.tables [results_dir=results/records] [out_dir=results] [wandb.mode=disabled]

Output is byte-for-byte reproducible, and files of tables/figures that no longer exist are removed,
so <out_dir>/tables and <out_dir>/figures always mirror the records exactly.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("diet")


def _remove_stale(folder: Path, suffixes: tuple[str, ...], written: set[Path]) -> None:
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        if path.suffix.lstrip(".") in suffixes and path not in written:
            log.info("removing stale %s", path)
            path.unlink()


def regenerate(results_dir: str | Path, out_dir: str | Path) -> tuple[list, list[Path]]:
    """Write <out_dir>/tables and <out_dir>/figures from the records; returns (tables, paths written)."""
    from diet.analysis.blocks import blocks_from_frame
    from diet.analysis.plots import build_figures, write_figures
    from diet.analysis.frame import load_records, tidy_frame
    from diet.analysis.render import FORMATS, write_tables
    from diet.analysis.tables import build_tables

    records = load_records(results_dir)
    frame = tidy_frame(records)
    tables = build_tables(frame)
    figures = build_figures(blocks_from_frame(frame), {r["config_hash"]: r for r in records})
    out = Path(out_dir)
    paths = write_tables(tables, out / "tables") + write_figures(figures, out / "figures")
    _remove_stale(out / "tables", FORMATS, set(paths))
    _remove_stale(out / "figures", ("png",), set(paths))
    log.info("%d records -> %d tables, %d figures under %s", len(records), len(tables), len(figures), out)
    return tables, paths


@hydra.main(version_base="1.3", config_path="../conf", config_name="tables")
def main(cfg: DictConfig) -> None:
    from diet.config.sections import WANDB_MODES
    from diet.run.tracking import log_tables

    plain = OmegaConf.to_container(cfg, resolve=True)
    if plain["wandb"]["mode"] not in WANDB_MODES:
        log.error("wandb.mode=%r is not allowed: use one of %s", plain["wandb"]["mode"], ", ".join(WANDB_MODES))
        sys.exit(2)
    tables, paths = regenerate(plain["results_dir"], plain["out_dir"])
    for path in paths:
        print(path)
    for run_dir in log_tables(tables, plain["wandb"]):
        print(f"wandb: {run_dir}")


if __name__ == "__main__":
    main()
