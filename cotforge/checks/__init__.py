"""Checks: one small class each, registered by name (see `base.py`)."""

import importlib

from cotforge.checks.base import REGISTRY, Check, Verdict, create, register

# Modules that define checks; importing them registers their classes.
CHECK_MODULES = ["cotforge.checks.format"]


def load_all() -> dict:
    for module in CHECK_MODULES:
        importlib.import_module(module)
    return REGISTRY


__all__ = ["REGISTRY", "Check", "Verdict", "create", "load_all", "register"]
