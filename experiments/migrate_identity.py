"""One-off migration (issue 33) of stored records to the identity of diet.config.identity: the base sections plus
the method's name, version and typed inputs, hashed whole. Run once on the committed results; kept so that
anyone holding records made before it can migrate theirs.

    python -m experiments.migrate_identity results/records results/superseded --rewrite results --map results/migrations/identity_v2.json
    python -m experiments.migrate_identity results/records --check     # what it would do, writing nothing
    python -m experiments.migrate_identity --tables-against REV --map results/migrations/identity_v2.json
        # after `make tables`: each table as it was at git revision REV, its hashes mapped, against today's

Each record not migrated yet gets `config_hash_v1` / `effective_config_v1` (what it was identified by) and the
identity today's code computes from its stored config, with the method version it was made by; the file is
renamed to the new hash. Before anything is written every record is checked: its stored base sections (model,
tasks, evaluation, data) must equal the ones recomputed, and every option its old identity recorded for the
method must equal the method's new inputs (`old_terms`), so the new identity names the same run. `--rewrite`
replaces old hashes in the other files under a folder (check tables, analyses, copies of records). Exits 1
when a record fails a check or two records would share a new identity.
"""

from __future__ import annotations

import argparse
import difflib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from diet.config.identity import base_identity, config_hash, identity
from diet.io import atomic_write_text, json_text
from diet.methods.inputs import GenericText, LayerFloor, MaskRule, MergeRule, ProfileStatistic, Seed, Target, TaskSamples
from diet.run.cell import resolve

HASH_LENGTH = 16


def old_terms(inputs: Any) -> dict[str, Any]:
    """The method's inputs written as the old identity recorded them (section.option -> value), for the
    comparison before migrating."""
    terms: dict[str, Any] = {}
    for name in getattr(inputs, "__dataclass_fields__", {}):
        value = getattr(inputs, name)
        if isinstance(value, Target):
            terms.update({"sparsity": value.sparsity, "dims": value.dims, "sparsity_of": value.of})
        elif isinstance(value, TaskSamples):
            terms.update({"calib.n": value.n, "calib.with_answer": value.with_answer,
                          "calib.max_length": value.max_length, "calib_tasks": list(value.tasks),
                          "seed": value.seed, "profile_exclude_bos": value.exclude_bos})
        elif isinstance(value, GenericText):
            identity_ = value.identity()
            terms.update({"calib.source": {k: identity_[k] for k in ("file_sha256", "layout", "windows",
                                                                      "window_length")},
                          "seed": value.seed, "profile_exclude_bos": value.exclude_bos})
        elif isinstance(value, MaskRule):
            terms.update({"mask.scope": value.scope, "mask.min_keep_fraction": value.min_keep_fraction})
        elif isinstance(value, LayerFloor):
            terms["mask.min_keep_fraction"] = value.min_keep_fraction
        elif isinstance(value, MergeRule):
            terms.update({"merge": value.rule, "vote.threshold": value.threshold, "vote.exact": value.exact})
        elif isinstance(value, ProfileStatistic):
            terms["profile.stat"] = value.stat
        elif isinstance(value, Seed):
            terms["seed"] = value.value
        elif name == "options":
            terms.update({f"method.{key}": item for key, item in vars(value).items()})
    return terms


def old_value(old: dict[str, Any], term: str, evaluated: list[str]) -> Any:
    """A term's value in an old identity, with that identity's encodings: options that entered only when set
    (sparsity_of, profile_exclude_bos), profiled tasks only when not the evaluated ones."""
    defaults = {"sparsity_of": "dim", "profile_exclude_bos": False, "calib_tasks": evaluated}
    if term in old:
        return old[term]
    section, _, key = term.partition(".")
    if key and isinstance(old.get(section), dict) and key in old[section]:
        return old[section][key]
    return defaults.get(term, KeyError)


def differences(record: dict[str, Any], cell: Any) -> list[str]:
    """Where the record's old identity and the recomputed one disagree about the run (empty: the same run)."""
    old = record["effective_config"]
    problems = [f"{section}: stored {old.get(section)!r}, recomputed {value!r}"
                for section, value in base_identity(cell.cfg, cell.tasks).items() if old.get(section) != value]
    for term, value in old_terms(cell.inputs).items():
        stored = old_value(old, term, list(old["tasks"]))
        if stored is KeyError or stored != value:
            problems.append(f"{term}: stored {'nothing' if stored is KeyError else repr(stored)}, input {value!r}")
    return problems


def migrated(record: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the record with its new identity, what disagreed: empty when it may be written)."""
    cell = resolve(record["config"])
    problems = differences(record, cell)
    version = int(record["effective_config"].get("method_version", 1))
    effective = identity(cell.cfg, cell.tasks, cell.method, cell.inputs, cell.checked.recovery, version=version)
    new = {**record, "config_hash": config_hash(effective), "effective_config": effective,
           "config_hash_v1": record["config_hash"], "effective_config_v1": record["effective_config"]}
    return new, problems


def plan(folders: list[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], dict[str, str], list[str]]:
    """(path -> migrated record, old hash -> new hash, problems) for every record not migrated yet."""
    todo, mapping, problems, owners = [], {}, [], {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            record = json.loads(path.read_text())
            if "config_hash_v1" in record:
                continue
            new, wrong = migrated(record)
            problems += [f"{path.name}: {problem}" for problem in wrong]
            old_hash, new_hash = record["config_hash"], new["config_hash"]
            if mapping.get(old_hash, new_hash) != new_hash:
                problems.append(f"{path.name}: {old_hash} maps to {mapping[old_hash]} and {new_hash}")
            mapping[old_hash] = new_hash
            owner = owners.setdefault((folder, new_hash), old_hash)
            if owner != old_hash:
                problems.append(f"{path.name}: cells {owner} and {old_hash} would share the identity {new_hash}")
            todo.append((path, new))
    return todo, mapping, problems


def write(todo: list[tuple[Path, dict[str, Any]]]) -> None:
    for path, record in todo:
        target = path.with_name(path.name.replace(record["config_hash_v1"], record["config_hash"]))
        atomic_write_text(target, json.dumps(record, indent=2, sort_keys=True) + "\n")
        if target != path:
            path.unlink()


def rewrite(folder: Path, mapping: dict[str, str], skip: list[Path]) -> list[Path]:
    """Replace every old hash by its new one in the text files under `folder` (and in their names)."""
    changed = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if any(path.is_relative_to(s) for s in skip) or path.suffix not in (".md", ".csv", ".json", ".tex", ".txt"):
            continue
        text = original = path.read_text()
        name = path.name
        for old, new in mapping.items():
            text, name = text.replace(old, new), name.replace(old, new)
        if text != original or name != path.name:
            atomic_write_text(path.with_name(name), text)
            if name != path.name:
                path.unlink()
            changed.append(path.with_name(name))
    return changed


def tables_against(revision: str, mapping: dict[str, str], folder: Path = Path("results/tables")) -> int:
    """Print how each table under `folder` differs from the same file at git `revision` once its hashes are
    mapped (the numbers must not); returns the number of files that differ."""
    differing = 0
    for path in sorted(folder.glob("*")):
        shown = subprocess.run(["git", "show", f"{revision}:{path.as_posix()}"], capture_output=True, text=True)
        if shown.returncode != 0 or path.suffix == ".png":
            continue
        before = shown.stdout
        for old, new in mapping.items():
            before = before.replace(old, new)
        lines = list(difflib.unified_diff(before.splitlines(), path.read_text().splitlines(), lineterm="", n=0))
        if lines:
            differing += 1
            print(f"## {path}\n" + "\n".join(line[:240] for line in lines[2:]))
    print(f"{differing} table file(s) differ from {revision} beyond the hashes")
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="*", help="folders of records")
    parser.add_argument("--rewrite", type=Path, help="replace old hashes in the other files under this folder")
    parser.add_argument("--map", type=Path, help="write the old -> new hash map here (JSON)")
    parser.add_argument("--check", action="store_true", help="check and report, write nothing")
    parser.add_argument("--tables-against", metavar="REV", help="compare results/tables with git REV under --map")
    args = parser.parse_args(argv)
    if args.tables_against:
        if args.map is None:
            parser.error("--tables-against needs --map (the old -> new hashes)")
        tables_against(args.tables_against, json.loads(args.map.read_text()))
        return 0
    if not args.folders:
        parser.error("name at least one folder of records")
    todo, mapping, problems = plan(args.folders)
    print(f"{len(todo)} record(s) to migrate, {len(set(mapping.values()))} new identities")
    if problems:
        print("not migrated:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.check:
        return 0
    write(todo)
    if args.map:
        known = json.loads(args.map.read_text()) if args.map.exists() else {}
        atomic_write_text(args.map, json_text({**known, **mapping}))
    if args.rewrite:
        for path in rewrite(args.rewrite, mapping, [*args.folders, *([args.map] if args.map else [])]):
            print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
