"""List the cells a sweep would run, which are already done, and the estimated hours of the rest.

    python -m experiments.plan experiment=paper_main                     # before submitting to Slurm
    python -m experiments.plan experiment=fair_study_local --device cpu
    python -m experiments.plan -m method=dense,diet sparsity=0.2,0.4    # any sweep, as experiments.run -m takes it

Loads no model: it composes every cell exactly as `python -m experiments.run -m ...` would (the
experiment's hydra.sweeper.params, then the command line, which wins), validates it, and looks its
config hash up in results_dir (the cells a run would skip). Estimates come from finished records of the
same model, method and device kind (diet/run/plan.py); cells without one are counted, not guessed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from diet.errors import DietConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def sweep_cells(overrides: list[str]) -> list[tuple[list[str], dict[str, Any]]]:
    """(cell overrides, resolved config) of every cell, as Hydra's basic sweeper forms them."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    plain = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose(config_name="config", overrides=plain, return_hydra_config=True)
        params = base.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params) if params is not None else {}
        swept = [f"{key}={value}" for key, value in params.items()] + overrides
        [batch] = BasicSweeper.split_arguments(parser.parse_overrides(swept), None)
        cells = []
        for cell in batch:
            cfg = OmegaConf.to_container(compose(config_name="config", overrides=cell), resolve=True)
            cells.append(([o for o in cell if o not in plain], cfg))  # what varies between cells
    return cells


def main(argv: list[str] | None = None) -> int:
    from diet.run.plan import format_plan, plan_cells

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="device kind whose measured costs estimate the cells (default cuda)")
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted for symmetry with experiments.run")
    parser.add_argument("--todo", action="store_true",
                        help="print only the overrides of each distinct cell not yet done nor running, one per line "
                             "(to resubmit exactly those)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    try:
        cells = sweep_cells(args.overrides)
        results_dir = Path(cells[0][1]["results_dir"]) if cells else Path("results/records")
        plan = plan_cells(cells, results_dir, args.device)
    except DietConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if args.todo:
        for cell in plan.todo:
            if cell.running is None:
                print(" ".join(cell.overrides))
        return 0
    print(format_plan(plan, args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
