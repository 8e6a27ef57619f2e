"""Shared fixtures: builders of reports and cores for unit tests of the core."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from hacluster.core.messages import Phase, Report
from hacluster.core.node import CoreConfig, HostCore
from hacluster.core.timing import Timing
from hacluster.lab.poll import wait_until

GENERATION = 77


@pytest.fixture
def config() -> CoreConfig:
    return CoreConfig(Timing.derive(5.0), hosts=3, generation=GENERATION)


def report(sender: int, seq: int, *, boot: int = 1, generation: int = GENERATION,
           phase: Phase = Phase.NORMAL, liveset: frozenset[int] = frozenset({0, 1, 2}),
           hb: frozenset[int] = frozenset({0, 1, 2}), sf: frozenset[int] = frozenset({0, 1, 2}),
           proposal: frozenset[int] | None = None) -> Report:
    return Report(generation=generation, sender=sender, boot=boot, seq=seq, phase=phase,
                  liveset=liveset, hbdomain=hb, sfdomain=sf,
                  statefile_access=sender in sf, proposal=proposal)


def armed_core(config: CoreConfig, me: int = 0, now: float = 100.0) -> HostCore:
    return HostCore(config, me, boot=1, now=now, liveset=frozenset(range(config.hosts)))


def wait_for(check: Callable[[], bool], limit: float, what: str) -> float:
    took = wait_until(check, limit)
    assert took is not None, f"timed out waiting for {what}"
    return took


def load_tool(name: str) -> ModuleType:
    """A script of ``tools/`` imported as a module (benchmarks are scripts, not package code)."""
    path = Path(__file__).resolve().parents[1] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
