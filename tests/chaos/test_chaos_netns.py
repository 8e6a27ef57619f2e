"""Chaos on a netns pool (root): a seeded smoke run, and a planted split brain.

The smoke run is what CI runs on every change: a few minutes of seeded
faults that must end with no violation. The planted fault proves the verdict
can fail: a watchdog that fires a minute later than the fence window assumes
(the test-only ``unsafe_watchdog_delay``) lets survivors restart the VMs of
a host whose daemon is paused while that host still runs them, until the
daemon wakes and fences; the checker must find the double run on the guests'
disks. The same pause with a true watchdog must pass.

The plant is a late watchdog rather than a short fence window: even a zero
window leaves the survivors waiting for the agreement round, which at T = 20 s
ended only 2*t1 before the watchdog fired, and a loaded CI machine ate that
margin (the planted run passed). A late watchdog leaves the whole pause.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.chaos.checker import check
from hacluster.chaos.command import run_chaos
from hacluster.chaos.journal import JOURNAL, read_journal
from hacluster.chaos.schedule import Fault
from hacluster.core.timing import Timing

from ..conftest import assert_clean_chaos_run

pytestmark = [pytest.mark.slow, pytest.mark.netns]  # netns: skipped without root
T = 3.0
#: how late the planted watchdog fires: far past the pause below
PLANTED_DELAY = 60.0


def test_seeded_chaos_smoke_has_no_violation(tmp_path: Path) -> None:
    assert_clean_chaos_run(tmp_path / "chaos", "netns", duration=120, rate=6, timeout=T,
                           least_faults=3)


def paused_member(directory: Path, unsafe_watchdog_delay: float | None) -> int:
    """Pause host 1's daemon (it runs vm-web1) past its watchdog and the
    survivors' restart: with a true watchdog, its guest is dead long before."""
    timing = Timing.derive(T)
    hold = timing.lease + 3 * T
    return run_chaos("netns", 3, T, duration=hold + 20.0, seed=0, rate=1.0,
                     directory=directory,
                     unsafe_watchdog_delay=unsafe_watchdog_delay,
                     faults=[Fault("pause", 1, hold, gap=2.0)])


def test_planted_late_watchdog_fails_the_checker(tmp_path: Path) -> None:
    assert paused_member(tmp_path / "unsafe", unsafe_watchdog_delay=PLANTED_DELAY) == 1
    verdict = check(tmp_path / "unsafe")
    doubles = [v for v in verdict.violations if v.startswith("single-run: vm-web1")]
    assert doubles, verdict.report()


def test_the_same_pause_with_the_safe_window_passes(tmp_path: Path) -> None:
    assert paused_member(tmp_path / "safe", unsafe_watchdog_delay=None) == 0
    verdict = check(tmp_path / "safe")
    assert verdict.faults[0].affected == ["vm-web1"], verdict.report()
    assert verdict.faults[0].fenced == [1]


def test_lifecycle_operations_between_faults_keep_every_vm_single(tmp_path: Path) -> None:
    """A member killed (its VMs restart elsewhere), then the operator's operations:
    rebalance brings them home, a migrate, a reboot and a suspend-resume; every
    answer journaled, every VM single and running at the end."""
    directory = tmp_path / "ops"
    faults = [Fault("kill", 1, 1.0, gap=2.0), Fault("rebalance", gap=1.0),
              Fault("migrate", 2, gap=1.0, vm=0), Fault("reboot", gap=1.0, vm=1),
              Fault("suspend", 0, 1.0, gap=1.0, vm=2)]
    assert run_chaos("netns", 3, T, duration=120.0, seed=0, rate=1.0, directory=directory,
                     faults=faults) == 0
    verdict = check(directory)
    assert not verdict.violations, verdict.report()
    said = [r for r in read_journal(directory / JOURNAL) if r["event"] == "operation"]
    verbs = [r["verb"] for r in said if r["ok"]]
    assert verbs[:1] == ["pool-ha-rebalance"] and "moved home" in said[0]["said"], said
    assert {"vm-migrate", "vm-reboot", "vm-suspend", "vm-resume"} <= set(verbs), said
