"""Prunable dimension types (`dims`): a registry of `Dimension`s (diet.dims.base), one module each.

Every module of this package that registers a dimension is imported here, so a new dimension type is
one new file. `dims` values name one selectable dimension or several joined by "+" in registry order
("mlp+heads"): diet.dims.choice.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "choice", "accounting"):
        importlib.import_module(f"{__name__}.{_module.name}")
