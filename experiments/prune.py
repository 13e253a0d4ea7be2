"""Prune and save, without evaluating: python -m experiments.prune method=diet sparsity=0.2 save_model=models/diet20

Takes the same options as experiments.run (model, method, sparsity, calib.*, ...); writes the pruned model
(a plain transformers checkpoint where the shapes allow, diet/export/save.py) and its model card, no record.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from diet.errors import DietConfigError

log = logging.getLogger("diet")


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from diet.run.pipeline import prune_cell

    try:
        saved = prune_cell(OmegaConf.to_container(cfg, resolve=True))
    except DietConfigError as error:
        log.error("configuration error: %s", error)
        sys.exit(2)
    print(f"saved ({saved['format']}: {saved['why']}; load with {saved['load_with']}): {saved['path']}")
    for note in saved.get("notes", []):
        print(f"  {note}")
    if saved.get("padded"):
        padded = saved["padded"]
        print(f"  stock reload vs pruned model: max |logit difference| {padded['max_logit_difference']:.3g} "
              f"(float rounding bound {padded['rounding_bound']:.3g}), same argmax: {padded['same_argmax']}")
    print(f"parameters {saved['parameters_before']:,} -> {saved['parameters_after']:,}; "
          f"weights sha256 {saved['weights_sha256']}")


if __name__ == "__main__":
    main()
