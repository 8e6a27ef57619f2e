"""Every named scenario gives the outcome the spec predicts, within the bound."""

from __future__ import annotations

import pytest

from hacluster.sim.scenarios import SCENARIOS, ScenarioResult, run_scenario
from hacluster.sim.trace import Trace, TraceEvent


@pytest.mark.parametrize("name", sorted(SCENARIOS))
@pytest.mark.parametrize("timeout", [3.0, 5.0])
def test_named_scenario(name: str, timeout: float) -> None:
    result = run_scenario(SCENARIOS[name], seed=1, timeout=timeout, trace=Trace())
    assert result.ok, "\n".join([*result.violations, *result.sim.trace.lines()])
    scenario = result.scenario
    assert result.sim.survivors() == scenario.survivors
    assert result.sim.fenced() == scenario.fenced
    if scenario.restart:
        assert result.commit_at is not None
        assert result.commit_at - result.fault_at <= result.bound
        assert not result.sim.vms_down()


def test_pause_is_fenced_by_the_watchdog_before_any_commit() -> None:
    result = run_scenario(SCENARIOS["pause-longer-than-T"], trace=Trace())
    trace = result.sim.trace
    fences = [e for e in trace.of_kind("FENCE") if e.host == 2]
    commits = [e for e in trace.of_kind("COMMIT") if "removed [2]" in e.text]
    assert fences and "watchdog" in fences[0].text
    assert commits and fences[0].time < min(c.time for c in commits)


def test_master_crash_elects_the_lowest_survivor() -> None:
    result = run_scenario(SCENARIOS["master-crash"], trace=Trace())
    assert result.sim.masters() == {1}
    gained = [e for e in result.sim.trace.of_kind("MASTER") if "gained" in e.text]
    assert [e.host for e in gained] == [0, 1]
    commit = min(e.time for e in result.sim.trace.of_kind("COMMIT") if "removed [0]" in e.text)
    assert gained[1].time >= commit  # a new master only after the fence window


def test_rule_2_holds_without_master_then_fences_all() -> None:
    result = run_scenario(SCENARIOS["statefile-lost-everywhere"], trace=Trace())
    phases = [e.text for e in result.sim.trace.of_kind("PHASE")]
    assert sum("survival rule 2" in p for p in phases) == 3
    reasons = [e.text for e in result.sim.trace.of_kind("FENCE")]
    # whoever notices the crash first: rule 2 itself, or the lease (in rule-2 mode
    # the whole liveset vouches for a host, so a crash ends every other lease)
    assert len(reasons) == 2
    assert all("survival-rule-2" in r or "lease running out" in r for r in reasons)


def test_corrupted_slot_changes_nothing() -> None:
    result = run_scenario(SCENARIOS["corrupted-slot"], trace=Trace())
    assert not result.sim.trace.of_kind("COMMIT")
    assert not result.sim.trace.of_kind("FENCE")
    assert all(h.core is not None and h.core.counters.corrupt_slots > 0
               for h in result.sim.hosts if h.index != 1)


def test_rejoined_host_gets_work_again() -> None:
    result = run_scenario(SCENARIOS["rejoin-after-fence"], trace=Trace())
    added = [e for e in result.sim.trace.of_kind("COMMIT") if "added [2]" in e.text]
    assert len(added) == 3  # every host, the joiner included, commits the addition


# ----------------------------------------------------------- cold start (issue #13)
def _formed(result: ScenarioResult) -> list[TraceEvent]:
    """Cold starts: a host armed by itself, its commit adding every host of the liveset."""
    return [e for e in result.sim.trace.of_kind("COMMIT")
            if e.text.startswith("liveset ") and e.text.endswith(
                "added " + e.text[len("liveset "):e.text.index("]") + 1])]


def test_total_outage_reforms_the_pool_and_restarts_every_vm() -> None:
    result = run_scenario(SCENARIOS["total-outage"], trace=Trace())
    formed = _formed(result)
    assert formed and all("[0, 1, 2]" in e.text for e in formed)
    reboot = result.fault_at + 0.5 * result.sim.timing.T
    assert min(e.time for e in formed) >= reboot + result.sim.timing.proof_window
    assert not result.sim.vms_down()
    assert all(result.sim.checker.running[vm] for vm in result.sim.vms)


def test_a_host_of_the_last_liveset_down_keeps_the_others_waiting_and_says_why() -> None:
    result = run_scenario(SCENARIOS["total-outage-one-stays-down"], trace=Trace())
    assert not _formed(result)
    for h in (0, 1):
        core = result.sim.hosts[h].core
        assert core is not None
        texts = [w.text for w in core.waits() if w.on == 2]
        assert texts and "last liveset [0, 1, 2]" in texts[0] and "not back" in texts[0]


def test_a_stale_liveset_forms_nothing_until_the_newest_is_back() -> None:
    result = run_scenario(SCENARIOS["stale-host-back-first"], trace=Trace())
    formed = _formed(result)
    assert [e.text for e in formed][:1] == ["liveset [0, 1], added [0, 1]"]
    host_1_back = result.fault_at + 6.0 * result.sim.timing.T
    assert min(e.time for e in formed) > host_1_back
    waits = [e.text for e in result.sim.trace.of_kind("WAIT") if e.host == 2]
    assert any("I am not in the last liveset [0, 1]" in w for w in waits)


def test_hosts_cut_off_from_a_rule_2_survivor_wait_for_it() -> None:
    result = run_scenario(SCENARIOS["lone-rule2-survivor-blocks-cold-start"], trace=Trace())
    trace = result.sim.trace
    assert any("survival rule 2" in e.text for e in trace.of_kind("PHASE") if e.host == 2)
    assert not _formed(result)  # 0 and 1 only ever join host 2
    added = [e for e in trace.of_kind("COMMIT") if e.host == 2 and "added [0, 1]" in e.text]
    assert added
