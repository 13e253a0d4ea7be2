"""The on-disk profile cache: hits, misses, corruption recovery, concurrent writers, atomic files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from diet.calib.profiler import ActivationProfile
from diet.calib.profile_cache import FORMAT_VERSION, ProfileCache

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY = {"model": "tiny-abc", "dtype": "float32", "task": "boolq", "n": 4, "seed": 0}


def make_profile(scale: float = 1.0) -> ActivationProfile:
    sums = {site: [torch.arange(6, dtype=torch.float64) * scale + layer for layer in range(2)]
            for site in ("mlp", "mlp_in", "attn", "hidden")}
    squares = {site: [t.square() for t in layers] for site, layers in sums.items()}
    signed = {site: [-t for t in layers] for site, layers in sums.items()}
    return ActivationProfile(n_samples=3, n_tokens=17, sum_abs=sums, sum_sq=squares, sum=signed,
                             block_cos=[15.5 * scale, 16.25])


def assert_equal_profiles(a: ActivationProfile, b: ActivationProfile) -> None:
    assert (a.n_samples, a.n_tokens) == (b.n_samples, b.n_tokens)
    assert a.block_cos == b.block_cos
    for kind in ("sum", "sum_abs", "sum_sq"):
        left, right = getattr(a, kind), getattr(b, kind)
        assert sorted(left) == sorted(right)
        for site in left:
            assert len(left[site]) == len(right[site])
            for x, y in zip(left[site], right[site]):
                assert x.dtype == y.dtype == torch.float64
                assert torch.equal(x, y)


class Counter:
    def __init__(self, scale: float = 1.0) -> None:
        self.calls = 0
        self.scale = scale

    def __call__(self) -> ActivationProfile:
        self.calls += 1
        return make_profile(self.scale)


def load_quietly(cache: ProfileCache, key: dict) -> ActivationProfile | None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid entry loads without any warning
        return cache.load(key)


# --------------------------------------------------------------------------- hits and misses

def test_computes_once_then_hits(tmp_path):
    cache = ProfileCache(tmp_path / "profiles")
    compute = Counter()
    first, cached = cache.get_or_compute(KEY, compute)
    assert (cached, compute.calls) == (False, 1)
    assert_equal_profiles(first, make_profile())

    second, cached = cache.get_or_compute(KEY, compute)
    assert (cached, compute.calls) == (True, 1)
    assert_equal_profiles(second, make_profile())

    # key order does not matter; a fresh cache object over the same folder also hits
    reordered = dict(reversed(list(KEY.items())))
    third, cached = ProfileCache(tmp_path / "profiles").get_or_compute(reordered, compute)
    assert (cached, compute.calls) == (True, 1)
    assert_equal_profiles(third, make_profile())


@pytest.mark.parametrize("change", [{"n": 5}, {"seed": 1}, {"task": "rte"}, {"model": "tiny-abd"}])
def test_different_key_recomputes(tmp_path, change):
    cache = ProfileCache(tmp_path)
    compute = Counter()
    cache.get_or_compute(KEY, compute)
    other = {**KEY, **change}
    assert cache.paths(other) != cache.paths(KEY)
    profile, cached = cache.get_or_compute(other, Counter(scale=2.0))
    assert cached is False
    assert_equal_profiles(profile, make_profile(2.0))
    # both entries now live side by side
    assert_equal_profiles(load_quietly(cache, KEY), make_profile())
    assert_equal_profiles(load_quietly(cache, other), make_profile(2.0))


def test_entry_layout_and_sidecar(tmp_path):
    cache = ProfileCache(tmp_path)
    cache.get_or_compute(KEY, Counter())
    data_path, meta_path = cache.paths(KEY)
    assert data_path.parent == meta_path.parent == tmp_path
    assert data_path.name.startswith("boolq-") and data_path.suffix == ".pt"
    assert meta_path.name == data_path.name[:-3] + ".json"
    meta = json.loads(meta_path.read_text())
    assert meta["key"] == KEY
    assert meta["format"] == FORMAT_VERSION
    assert meta["sha256"] == hashlib.sha256(data_path.read_bytes()).hexdigest()


def test_missing_entry_loads_none(tmp_path):
    assert load_quietly(ProfileCache(tmp_path / "nowhere"), KEY) is None


# --------------------------------------------------------------------------- corruption

def _truncate(data_path: Path, meta_path: Path) -> None:
    data = data_path.read_bytes()
    data_path.write_bytes(data[: len(data) // 2])


def _flip_byte(data_path: Path, meta_path: Path) -> None:
    data = bytearray(data_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data_path.write_bytes(bytes(data))


def _empty(data_path: Path, meta_path: Path) -> None:
    data_path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _flip_byte, _empty])
def test_checksum_mismatch_warns_and_recomputes(tmp_path, damage):
    cache = ProfileCache(tmp_path)
    cache.get_or_compute(KEY, Counter())
    data_path, meta_path = cache.paths(KEY)
    damage(data_path, meta_path)

    compute = Counter(scale=3.0)
    expected = rf"^profile cache entry {data_path.name} is corrupted \(checksum mismatch\); recomputing$"
    with pytest.warns(UserWarning, match=expected):
        profile, cached = cache.get_or_compute(KEY, compute)
    assert (cached, compute.calls) == (False, 1)
    assert_equal_profiles(profile, make_profile(3.0))
    # the repaired entry is valid: it loads without a warning, and the next call is a hit
    assert_equal_profiles(load_quietly(cache, KEY), make_profile(3.0))
    again, cached = cache.get_or_compute(KEY, compute)
    assert (cached, compute.calls) == (True, 1)


def test_unreadable_payload_with_matching_checksum_recomputes(tmp_path):
    """A payload that is not a torch file at all (checksum updated to match) is still rejected."""
    cache = ProfileCache(tmp_path)
    data_path, meta_path = cache.paths(KEY)
    tmp_path.mkdir(exist_ok=True)
    data_path.write_bytes(b"definitely not a torch file")
    meta_path.write_text(json.dumps({"key": KEY, "sha256": hashlib.sha256(data_path.read_bytes()).hexdigest()}))
    compute = Counter()
    expected = rf"(?s)^profile cache entry {data_path.name} is corrupted \(Weights only load failed.+\); recomputing$"
    with pytest.warns(UserWarning, match=expected):
        profile, cached = cache.get_or_compute(KEY, compute)
    assert (cached, compute.calls) == (False, 1)
    assert_equal_profiles(load_quietly(cache, KEY), make_profile())


def test_corrupted_sidecar_recomputes(tmp_path):
    cache = ProfileCache(tmp_path)
    cache.get_or_compute(KEY, Counter())
    data_path, meta_path = cache.paths(KEY)
    meta_path.write_text('{"sha256": ')  # truncated JSON
    with pytest.warns(UserWarning, match=rf"^profile cache entry {data_path.name} is corrupted \(Expecting value"):
        _, cached = cache.get_or_compute(KEY, Counter())
    assert cached is False
    assert_equal_profiles(load_quietly(cache, KEY), make_profile())


# --------------------------------------------------------------------------- atomic writes

def test_no_temporary_files_after_store(tmp_path):
    cache = ProfileCache(tmp_path / "c")
    cache.store(KEY, make_profile())
    data_path, meta_path = cache.paths(KEY)
    assert sorted(os.listdir(tmp_path / "c")) == sorted([data_path.name, meta_path.name])
    # through get_or_compute only the (reusable, empty) lock file is added
    other = {**KEY, "task": "rte"}
    cache.get_or_compute(other, Counter())
    other_data, other_meta = cache.paths(other)
    assert sorted(os.listdir(tmp_path / "c")) == sorted(
        [data_path.name, meta_path.name, other_data.name, other_meta.name, other_data.name + ".lock"]
    )
    assert not [name for name in os.listdir(tmp_path / "c") if name.endswith(".tmp")]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    cache = ProfileCache(tmp_path)

    def failing_save(obj, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="^disk full$"):
        cache.store(KEY, make_profile())
    assert os.listdir(tmp_path) == []
    assert load_quietly(cache, KEY) is None


# --------------------------------------------------------------------------- concurrency

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import torch
    from diet.calib.profiler import ActivationProfile
    from diet.calib.profile_cache import ProfileCache

    root, counter, ready_dir, name, out = sys.argv[1:6]
    key = {"model": "tiny", "task": "boolq", "n": 4}

    def compute():
        time.sleep(1.0)
        with open(counter, "a") as handle:
            handle.write(f"{name}\\n")
        gen = torch.Generator().manual_seed(os.getpid())  # each process would compute different numbers
        values = torch.rand(8, generator=gen, dtype=torch.float64)
        return ActivationProfile(2, 9, {"mlp": [values.abs()]}, {"mlp": [values.square()]}, {"mlp": [values]},
                                 [float(values[0])])

    # barrier: both processes start get_or_compute at the same moment
    Path(ready_dir, name).touch()
    deadline = time.time() + 60
    while len(os.listdir(ready_dir)) < 2 and time.time() < deadline:
        time.sleep(0.01)
    profile, cached = ProfileCache(Path(root)).get_or_compute(key, compute)
    torch.save({"cached": cached, "state": profile.to_state()}, out)
    """
)


def test_two_processes_compute_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    counter, ready, root = tmp_path / "counter.txt", tmp_path / "ready", tmp_path / "cache"
    ready.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(root), str(counter), str(ready), name, str(tmp_path / f"{name}.pt")],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name in ("a", "b")
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs

    lines = counter.read_text().splitlines()
    assert len(lines) == 1 and lines[0] in ("a", "b")
    results = {name: torch.load(tmp_path / f"{name}.pt", weights_only=True) for name in ("a", "b")}
    computed_by = lines[0]
    waited = "b" if computed_by == "a" else "a"
    assert results[computed_by]["cached"] is False
    assert results[waited]["cached"] is True
    a, b = (ActivationProfile.from_state(results[name]["state"]) for name in ("a", "b"))
    assert_equal_profiles(a, b)

    # one valid entry on disk, equal to what both processes got
    cache = ProfileCache(root)
    assert_equal_profiles(load_quietly(cache, {"model": "tiny", "task": "boolq", "n": 4}), a)
    assert len([name for name in os.listdir(root) if name.endswith(".pt")]) == 1
    assert not [name for name in os.listdir(root) if name.endswith(".tmp")]
