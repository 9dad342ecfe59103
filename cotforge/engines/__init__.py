"""Engines: thin adapters behind one interface (see `base.py`)."""

from cotforge.engines.base import Completion, Engine, Request, SamplingParams, get_engine

__all__ = ["Completion", "Engine", "Request", "SamplingParams", "get_engine"]
