"""experiments.mask_overlap: pairwise Jaccard of stored records' MLP masks, recomputed and checked."""

from __future__ import annotations

import json

import pytest

from conftest import compose_config
from diet.run.pipeline import run_cell
from experiments import mask_overlap

TINY = ["model=tiny_gemma2", "tasks=[arc_easy,rte]", "calib.n=6", "eval.limit=4", "wandb.mode=disabled"]


def test_overlap_of_a_mask_with_itself_is_one_and_a_changed_hash_is_refused(tmp_path, isolated_cache, capsys):
    records = tmp_path / "records"
    paths = [run_cell(compose_config([*TINY, f"method={method}", "sparsity=0.5", f"results_dir={records}"]))[1]
             for method in ("diet", "activation_pooled")]
    assert mask_overlap.main([str(paths[0]), str(paths[0]), str(paths[1])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].endswith("| 1.000 |")  # diet with itself
    other = float(lines[3].split("|")[-2])
    assert 0.0 < other <= 1.0
    record = json.loads(paths[1].read_text())
    record["mask"]["mask_hash"] = "0" * 64
    paths[1].write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="does not reproduce its mask"):
        mask_overlap.main([str(paths[0]), str(paths[1])])
