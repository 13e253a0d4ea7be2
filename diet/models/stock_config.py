"""Whether the installed transformers accepts a config, and a config's values changed for one save.

transformers >= 5.25 validates a config when it is built or saved (e.g. Gemma-3 and Llama refuse a
`hidden_size` that is not a multiple of `num_attention_heads`, although their `head_dim` is set on its own),
so a pruned shape can be refused although the model runs. The export (diet.export.stock_layout) and the
spec format (diet.export.checkpoint) ask here first instead of meeting a traceback inside save_pretrained.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

PRIVATE = ("diet_pruning",)  # diet's own config attribute, no stock field


def stock_refusal(config: Any, overrides: Mapping[str, Any] | None = None) -> str | None:
    """Why the installed transformers refuses `config` with `overrides` (one line); None when it accepts it."""
    values = {key: value for key, value in config.to_dict().items() if key not in PRIVATE}
    values.update(overrides or {})
    try:
        type(config).from_dict(values)
    except Exception as error:  # noqa: BLE001 - its validators raise ValueError, StrictDataclass*Error, ...
        return " ".join(str(error).split())
    return None


@contextlib.contextmanager
def config_values(config: Any, overrides: Mapping[str, Any], drop: tuple[str, ...] = ()) -> Iterator[None]:
    """`config` with `overrides` set and the attributes `drop` removed, restored afterwards (a save_pretrained
    in between writes the changed values)."""
    saved = {key: getattr(config, key, None) for key in overrides}
    dropped = {key: getattr(config, key) for key in drop if hasattr(config, key)}
    for key in dropped:
        delattr(config, key)
    try:
        for key, value in overrides.items():
            setattr(config, key, value)
        yield
    finally:
        for key, value in saved.items():
            setattr(config, key, value)
        for key, value in dropped.items():
            setattr(config, key, value)


def accepted_hidden_size(config: Any) -> int | None:
    """The config's own hidden_size when transformers accepts it, else the smallest larger width it accepts
    (saved in config.json by the spec format, whose spec holds the true width); None when none up to twice
    the width is."""
    width = int(config.hidden_size)
    for candidate in range(width, 2 * width + 1):
        if stock_refusal(config, {"hidden_size": candidate}) is None:
            return candidate
    return None
