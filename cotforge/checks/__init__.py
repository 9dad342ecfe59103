"""Checks: one small class each, registered by name (see `base.py`).

Every module and subpackage in this folder is imported by `load_all()`; defining a class with
`@register` there is all it takes to make a check available to presets, `--checks` and rewards.
"""

import importlib
import pkgutil

from cotforge.checks.base import REGISTRY, Check, Verdict, create, register

_loaded = False


def load_all() -> dict:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base" and not module.name.startswith("_"):  # _sandbox_init etc. are scripts
                importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True
    return REGISTRY


__all__ = ["REGISTRY", "Check", "Verdict", "create", "load_all", "register"]
