"""Run one cell (or a Hydra multirun sweep): python -m experiments.run method=diet sparsity=0.2 ..."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from diet.errors import DietConfigError
from diet.run.records import mark_submitted_code

log = logging.getLogger("diet")


def launcher_jobs() -> int:
    """Cells the Hydra launcher runs at once on this machine: joblib's n_jobs (local_parallel), else 1
    (the basic launcher runs cells one after the other; Slurm gives each job its own cores)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:  # not inside a Hydra run
        return 1
    jobs = launcher.get("n_jobs", 1) if "joblib" in str(launcher.get("_target_", "")) else 1
    if isinstance(jobs, int) and jobs < 0:  # joblib: -1 = every core, -2 = all but one, ...
        from diet.run.threads import usable_cores

        jobs = usable_cores() + 1 + jobs
    return jobs if isinstance(jobs, int) and jobs > 0 else 1


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from diet.run.claims import CellInProgress
    from diet.run.pipeline import run_cell
    from diet.analysis.report import format_table
    from diet.run.tracking import log_run

    plain = OmegaConf.to_container(cfg, resolve=True)
    try:
        record, path = run_cell(plain, parallel_jobs=launcher_jobs())
    except DietConfigError as error:
        log.error("configuration error: %s", error)
        sys.exit(2)
    except CellInProgress as busy:  # a duplicate of a running cell: nothing to do, not a failure of the sweep
        print(f"in progress: {busy}")
        return
    if record is None:
        print(f"already done: {path}")
        return
    wandb_dir = log_run(record, plain["wandb"])
    print(format_table([record]))
    print(f"record: {path}" + (f"\nwandb: {wandb_dir}" if wandb_dir else ""))


if __name__ == "__main__":
    # The code this process runs is what it imported now: record that commit and dirty state, not the
    # working tree's at the time a long sweep writes its records (code_version is cached); cluster jobs
    # inherit it and stop if their checkout has moved since (diet.run.records.check_submitted_code).
    mark_submitted_code()
    main()
