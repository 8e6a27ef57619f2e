"""Pool model: agility with reasons, pool files, synthetic pools, recovery plan, CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from hacluster.core.planner import place_vms
from hacluster.core.pool import (
    SR,
    VM,
    Host,
    Network,
    Pool,
    PoolError,
    Power,
    Priority,
    agility,
    diagnostic_vm_status,
)
from hacluster.core.recovery import clustered_cap, memory_by_priority, recovery_plan
from hacluster.model import poolfile
from hacluster.model.pooldata import from_data, seed, to_data
from hacluster.model.synthetic import random_pool


def small_pool(**vm_fields: object) -> Pool:
    hosts = (Host("h0", "alpha", 8192, 512), Host("h1", "beta", 8192, 512),
             Host("h2", "gamma", 8192, 512))
    everyone = frozenset(h.uuid for h in hosts)
    srs = (SR("nfs", "nfs", True, everyone), SR("local0", "local-alpha", False, frozenset({"h0"})),
           SR("half", "half-nfs", True, frozenset({"h0", "h1"})))
    nets = (Network("mgmt", "management", everyone), Network("lab", "lab-only", frozenset({"h0"})))
    fields: dict[str, object] = {"disks": ("nfs",), "networks": ("mgmt",),
                                 "priority": Priority.RESTART}
    fields.update(vm_fields)
    vm = VM("v1", "web", 2048, power=Power.RUNNING, resident="h0",
            **fields)  # type: ignore[arg-type]
    return Pool(hosts, (vm,), srs, nets, host_failures_to_tolerate=1)


def test_an_agile_vm_has_no_reasons() -> None:
    pool = small_pool()
    assert agility(pool, pool.vm("v1")) == []
    assert "agile" in diagnostic_vm_status(pool, "v1")[1]


@pytest.mark.parametrize(("fields", "needle", "fix"), [
    ({"disks": ("local0",)}, "local SR local-alpha", "move the disk to a shared SR"),
    ({"disks": ("half",)}, "not plugged on host(s) gamma", "plug the SR on every host"),
    ({"networks": ("lab",)}, "network lab-only is missing on host(s) beta, gamma",
     "create the network"),
    ({"local_cd": True}, "CD", "eject"),
    ({"devices": ("gpu0",), "priority": Priority.BEST_EFFORT}, "gpu0", "detach"),
])
def test_every_reason_is_named_with_its_fix(fields: dict[str, object], needle: str,
                                            fix: str) -> None:
    pool = small_pool(**fields)
    text = "\n".join(diagnostic_vm_status(pool, "v1"))
    assert "not agile" in text and needle in text and fix in text


def test_two_reasons_are_both_named() -> None:
    pool = small_pool(disks=("local0",), local_cd=True)
    assert len(agility(pool, pool.vm("v1"))) == 2


def test_gpu_vms_can_only_be_best_effort() -> None:
    vm = VM("g", "gpu", 1024, devices=("gpu0",))
    assert replace(vm, priority=Priority.BEST_EFFORT).priority is Priority.BEST_EFFORT
    with pytest.raises(PoolError, match="only be protected as best-effort"):
        replace(vm, priority=Priority.RESTART)
    with pytest.raises(PoolError, match="only be protected as best-effort"):
        VM("g", "gpu", 1024, Priority.RESTART, devices=("gpu0",))


def test_bad_objects_are_refused() -> None:
    with pytest.raises(PoolError, match="memory must be positive"):
        VM("x", "x", 0)
    with pytest.raises(PoolError, match="resident host"):
        VM("x", "x", 1, power=Power.RUNNING)
    with pytest.raises(PoolError, match="overhead"):
        Host("h", "h", 10, 20)
    with pytest.raises(PoolError, match="unknown host"):
        Pool((Host("h", "h", 10),), (VM("x", "x", 1, power=Power.RUNNING, resident="nope"),))
    with pytest.raises(PoolError, match=r"0\.\.0"):
        Pool((Host("h", "h", 10),), host_failures_to_tolerate=1)


def test_a_gpu_vm_is_agile_among_the_hosts_with_its_device_class() -> None:
    hosts = (Host("h0", "h0", 4096, devices=("gpu",)), Host("h1", "h1", 4096),
             Host("h2", "h2", 4096, devices=("gpu",)))
    vm = VM("g", "gpu", 1024, Priority.BEST_EFFORT, power=Power.RUNNING, resident="h0",
            devices=("gpu",))
    pool = Pool(hosts, (vm,))
    assert agility(pool, vm) == []
    assert [pool.can_host(vm, h.uuid) for h in hosts] == [True, False, True]
    assert diagnostic_vm_status(pool, "g")[1] == (
        "agile among the hosts with its device class(es) gpu: h0, h2")
    fpga = replace(vm, devices=("fpga",))
    assert "no enabled host offers its device class(es) fpga" in str(agility(pool, fpga)[0])
    placement, unplaced = place_vms(pool, [vm, VM("p", "p", 3500)],
                                    [("h0", 900), ("h1", 4000), ("h2", 3000)])
    assert placement == {"g": "h2", "p": "h1"} and unplaced == []
    _, unplaced = place_vms(pool, [vm], [("h0", 900), ("h1", 4000)])
    assert [i.vm for i in unplaced] == ["g"]


def test_pool_file_round_trip(tmp_path: Path) -> None:
    pool = random_pool(5, 40, seed=3)
    written = poolfile.PoolFile(pool, {"vm-00001": ["sleep", "100"]})
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(written))
    assert poolfile.load(path) == written
    assert path.read_text().startswith("[pool]\nhost_failures")  # the default name: not written
    gpu_host = replace(pool.hosts[1], devices=("gpu", "fpga"))
    devices = poolfile.PoolFile(replace(pool, hosts=(pool.hosts[0], gpu_host, *pool.hosts[2:])))
    path.write_text(poolfile.dump(devices))
    assert poolfile.load(path).pool.hosts[1].devices == ("gpu", "fpga")
    named = poolfile.PoolFile(pool, name='prod "east" ü')
    path.write_text(poolfile.dump(named))
    assert poolfile.load(path) == named and seed(named).name == named.name
    checked = replace(pool.vms[2], ready="command")
    ready = poolfile.PoolFile(pool.with_vm(checked),
                              ready_commands={checked.uuid: ["curl", "-sf", "http://[::1]/"]})
    path.write_text(poolfile.dump(ready))
    assert poolfile.load(path) == ready
    db = seed(ready)
    assert db.ready_commands == {checked.uuid: ("curl", "-sf", "http://[::1]/")}
    assert from_data(to_data(db)) == db  # the database keeps it too


@pytest.mark.parametrize(("text", "error"), [
    ("[[host]]\nuuid='a'\nname='a'\n", "missing field 'memory'"),
    ("[[host]]\nuuid='a'\nname='a'\nmemory='big'\n", "'memory' must be a whole number"),
    ("[[host]]\nuuid='a'\nname='a'\nmemory=1\nram=2\n", "unknown field(s) ['ram']"),
    ("[[host]]\nuuid='a'\nname='a'\nmemory=8\n[[vm]]\nuuid='v'\nname='v'\nmemory=1\n"
     "priority='always'\n", "priority must be restart"),
    ("[[vm]]\nuuid='v'\nname='v'\nmemory=1\npower='running'\nhost='zz'\n", "unknown host"),
    ("[hosts]\n", "unknown table(s) ['hosts']"),
    ("this is not toml", "not valid TOML"),
    ("[pool]\nname = ''\n", "name must be 1 to 64 printable"),
    ('[pool]\nname = "tab\\there"\n', "name must be 1 to 64 printable"),
    ("[pool]\nname = 7\n", "'name' must be a string"),
    ("[[vm]]\nuuid='v'\nname='v'\nmemory=1\nready='command'\n",
     'ready = "command" and ready_command go together'),
    ("[[vm]]\nuuid='v'\nname='v'\nmemory=1\nready_command=['true']\n",
     'ready = "command" and ready_command go together'),
    ("[[vm]]\nuuid='v'\nname='v'\nmemory=1\nready='command'\nready_command=[]\n",
     "ready_command is empty"),
    ("[[vm]]\nuuid='v'\nname='v'\nmemory=1\nready='soon'\n", "ready must be one of"),
])
def test_bad_pool_files_say_what_is_wrong(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(text)
    with pytest.raises(PoolError) as caught:
        poolfile.load(path)
    assert error in str(caught.value) and str(path) in str(caught.value)


def test_synthetic_pools_are_a_function_of_the_seed() -> None:
    assert random_pool(8, 100, seed=5) == random_pool(8, 100, seed=5)
    assert random_pool(8, 100, seed=5) != random_pool(8, 100, seed=6)
    pool = random_pool(8, 100, seed=5)
    assert not any(v.devices and v.priority.protected for v in pool.vms)
    for host in pool.hosts:
        assert pool.free_memory(host.uuid) >= 0


def test_recovery_plan_targets_fit_and_avoid_the_failed_host() -> None:
    pool = random_pool(6, 60, seed=2)
    plan = recovery_plan(pool)
    assert len([s for s in plan.scenarios if len(s.failed) == 1]) == 6
    assert len([s for s in plan.scenarios if len(s.failed) == 2]) == 15
    for scenario in plan.scenarios:
        if scenario.fits:
            assert not set(scenario.placement.values()) & set(scenario.failed)
            assert len(scenario.placement) == scenario.moves
            load = {h.uuid: pool.free_memory(h.uuid) for h in pool.hosts}
            for vm, host in scenario.placement.items():
                load[host] -= pool.vm(vm).memory
            assert min(load.values()) >= 0


def test_overcommitted_when_the_configured_failures_have_no_plan() -> None:
    hosts = (Host("a", "a", 4096), Host("b", "b", 4096))
    vms = (VM("x", "x", 3000, Priority.RESTART, power=Power.RUNNING, resident="a"),
           VM("y", "y", 3000, Priority.RESTART, power=Power.RUNNING, resident="b"))
    plan = recovery_plan(Pool(hosts, vms, host_failures_to_tolerate=1))
    assert plan.tolerance.max_failures == 0 and plan.overcommitted


def test_memory_by_priority_per_pool_and_host() -> None:
    pool = small_pool()
    table = memory_by_priority(pool)
    assert table["pool"]["restart"] == 2048 and table["h0"]["restart"] == 2048
    assert table["h1"] == {"restart": 0, "best-effort": 0, "unprotected": 0}


def test_clustered_cap() -> None:
    assert clustered_cap(5, 0) == 2 and clustered_cap(4, 0) == 1 and clustered_cap(5, 2) == 3


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacluster", *args], capture_output=True,
                          text=True, check=False)


def test_plan_command_on_a_random_pool() -> None:
    done = run("plan", "--random-pool", "64:8000", "--seed", "1")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("max_host_failures_to_tolerate: ")
    assert last.split()[-1] in ("exact", "bound")


def test_plan_command_on_a_pool_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text(poolfile.dump(poolfile.PoolFile(small_pool())))
    done = run("plan", "--pool", str(path), "--targets")
    assert done.returncode == 0, done.stderr
    assert "if alpha fail(s): 1 protected VMs, fits" in done.stdout
    assert "-> beta: web" in done.stdout
    assert done.stdout.strip().endswith("max_host_failures_to_tolerate: 2 exact")
    diag = run("diagnostic-vm-status", "--pool", str(path), "--vm", "v1")
    assert "agile" in diag.stdout


@pytest.mark.parametrize("args", [
    ["plan"], ["plan", "--random-pool", "64x8000"], ["plan", "--pool", "/nonexistent.toml"],
    ["diagnostic-vm-status", "--pool", "/nonexistent.toml", "--vm", "x"],
])
def test_plan_command_bad_input_exits_2(args: list[str]) -> None:
    done = run(*args)
    assert done.returncode == 2 and "hacluster" in done.stderr and not done.stdout
