"""Stored run configs in the layout they were written in: before a method's own protocol moved into its section
of the config, DIET's `profile`, `mask`, `merge` and `vote` were top-level sections (FLAP read its floor from
`mask.min_keep_fraction`, every calibrated method `profile.exclude_bos`). `current_layout` moves such keys to
where today's config has them, for the method the config runs, so a committed record resolves to the identity
it was stored with (tests/test_plan.py checks every one)."""

from __future__ import annotations

from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from diet.methods import METHODS
from diet.methods.inputs import section_keys

LEGACY_SECTIONS = ("profile", "mask", "merge", "vote")
# today's key in a method's section -> (the top-level section it was, the key inside it or None for all of it)
MOVED: dict[str, tuple[str, str | None]] = {
    "profile": ("profile", "stat"),
    "mask": ("mask", None),
    "merge": ("merge", None),
    "vote": ("vote", None),
    "min_keep_fraction": ("mask", "min_keep_fraction"),
}


def current_layout(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """`cfg` with the legacy top-level sections moved into the method's section (the keys the method takes)
    and `profile.exclude_bos` into `calib`; a config in today's layout is returned as it is."""
    if not any(name in cfg for name in LEGACY_SECTIONS):
        return cfg
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    legacy = {name: plain.pop(name) for name in LEGACY_SECTIONS if name in plain}
    exclude_bos = (legacy.get("profile") or {}).get("exclude_bos")
    if exclude_bos is not None and "exclude_bos" not in (plain.get("calib") or {}):
        plain["calib"] = {**(plain.get("calib") or {}), "exclude_bos": exclude_bos}
    section = dict(plain["method"])
    for key in section_keys(METHODS.get(section["name"])):
        old_section, old_key = MOVED[key]
        if key in section or legacy.get(old_section) is None:
            continue
        if old_key is None:
            section[key] = legacy[old_section]
        elif old_key in legacy[old_section]:
            section[key] = {old_key: legacy[old_section][old_key]} if key == old_section else legacy[old_section][old_key]
    plain["method"] = section
    return plain
