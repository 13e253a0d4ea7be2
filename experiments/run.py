"""Run one cell (or a Hydra multirun sweep): python -m experiments.run method=diet sparsity=0.2 ..."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from diet.errors import DietConfigError
from diet.records import code_version

log = logging.getLogger("diet")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from diet.pipeline import run_cell
    from diet.report import format_table
    from diet.tracking import log_run

    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        record, path = run_cell(plain)
    except DietConfigError as error:
        log.error("configuration error: %s", error)
        sys.exit(2)
    if record is None:
        print(f"already done: {path}")
        return
    wandb_dir = log_run(record, plain["wandb"])
    print(format_table([record]))
    print(f"record: {path}" + (f"\nwandb: {wandb_dir}" if wandb_dir else ""))


if __name__ == "__main__":
    # The code this process runs is what it imported now: record that commit and dirty state, not the
    # working tree's at the time a long sweep writes its records (code_version is cached).
    code_version()
    main()
