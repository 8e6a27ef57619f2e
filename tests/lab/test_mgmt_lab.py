"""The management plane on real pools, driven with hactl as an operator would.

Local backend (no root) and netns (root): HA enabled with hactl, VMs protected,
failures to tolerate computed and set, the master killed, every acknowledged
setting found intact on the new master; bad input refused with nothing changed;
a stream of writes under master kills loses nothing acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hacluster.lab.local import LocalLab
from hacluster.lab.netns import NetnsLab
from hacluster.mgmt import api, verbs
from hacluster.mgmt.tls import client_context

from ..conftest import lab_base_port, wait_for

T = 3.0
pytestmark = pytest.mark.slow  # real pools of node daemons
NETNS = pytest.param("netns", marks=pytest.mark.netns)  # skipped without root (conftest)


@pytest.fixture(params=["local", NETNS])
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalLab]:
    pool = NetnsLab(tmp_path / "lab") if request.param == "netns" else LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port(), ha_off=True)
    try:
        wait_for(lambda: all(r.get("phase") == "HA_OFF" for r in pool.status()), 10,
                 "every host up with HA off")
        yield pool
    finally:
        pool.down()


def hactl(lab: LocalLab, *words: str, config: Path | None = None) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
         str(config or lab.root / "hactl.toml"), *words],
        capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout.strip(), done.stderr.strip()


def ok(lab: LocalLab, *words: str) -> str:
    code, out, err = hactl(lab, *words)
    assert code == 0, f"hactl {' '.join(words)} -> {code}: {err}"
    return out


def master(lab: LocalLab) -> int | None:
    return next((r["host"] for r in lab.status() if r.get("master")), None)


@contextlib.contextmanager
def armed_pool(tmp_path: Path) -> Iterator[LocalLab]:
    """Three local hosts started armed, once one of them is master; down afterwards."""
    pool = LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port())
    try:
        wait_for(lambda: master(pool) is not None, 15 * T, "a master")
        yield pool
    finally:
        pool.down()


def settings(lab: LocalLab) -> dict[str, str]:
    return {
        "batch": ok(lab, "vm-param-get", "uuid=vm-batch", "param-name=ha-restart-priority"),
        "batch-order": ok(lab, "vm-param-get", "uuid=vm-batch", "param-name=order"),
        "scratch-delay": ok(lab, "vm-param-get", "uuid=vm-scratch", "param-name=start-delay"),
        "nft": ok(lab, "pool-param-get", "param-name=ha-host-failures-to-tolerate"),
        "mail": ok(lab, "pool-param-get", "param-name=other-config", "param-key=note"),
        "ha": ok(lab, "pool-param-get", "param-name=ha-enabled"),
    }


BAD_INPUT = [
    (("vm-param-sett", "uuid=vm-sql"), 2, "unknown verb"),
    (("vm-param-set", "uuid=vm-sql", "order"), 2, "expected key=value"),
    (("vm-param-set", "order=1"), 2, "missing uuid="),
    (("vm-param-set", "uuid=vm-sql", "colour=red"), 2, "unknown parameter 'colour'"),
    (("vm-param-set", "uuid=vm-nope", "order=1"), 1, "no VM with uuid vm-nope"),
    (("vm-param-set", "uuid=vm-sql", "order=-3"), 1, "whole number"),
    (("vm-param-set", "uuid=vm-sql", "ha-restart-priority=always"), 1, "restart, best-effort"),
    (("pool-param-set", "ha-host-failures-to-tolerate=7"), 1, "0..2"),
    (("pool-param-set", "ha-host-failures-to-tolerate=two"), 1, "whole number"),
    (("pool-param-set", "uuid=pool-wrong", "name-label=x"), 1, "no pool with uuid"),
    (("host-disable", "uuid=host-9999"), 1, "no host with uuid"),
    (("pool-ha-enable",), 1, "already enabled"),
    (("pool-emergency-transition-to-master",), 1, "refused while HA is armed"),
    (("host-emergency-ha-disable",), 1, "needs --force"),
]


def test_operator_walkthrough_survives_a_master_kill(lab: LocalLab) -> None:
    code, out, err = hactl(lab, "pool-ha-enable", "ha-config:timeout=3")
    assert code == 0, err
    assert "arming every host" in err and "HA enabled" in out
    wait_for(lambda: master(lab) is not None, 15 * T, "a master after the enable")
    ok(lab, "vm-param-set", "uuid=vm-batch", "ha-restart-priority=restart", "order=2")
    ok(lab, "vm-param-set", "uuid=vm-scratch", "start-delay=4.5")
    ok(lab, "pool-param-set", "other-config:note=kept")
    most = int(ok(lab, "pool-ha-compute-max-host-failures-to-tolerate").splitlines()[0])
    assert most == 2
    ok(lab, "pool-param-set", f"ha-host-failures-to-tolerate={most}")
    wait_for(lambda: any(r.get("pool", {}).get("plan", {}).get("configured") == most
                         for r in lab.status()), 2 * T, "the master's plan to follow the change")
    before = settings(lab)
    assert before == {"batch": "restart", "batch-order": "2", "scratch-delay": "4.5",
                      "nft": "2", "mail": "kept", "ha": "true"}

    generation = ok(lab, "pool-param-get", "param-name=generation")
    for words, code, says in BAD_INPUT:
        got, out, err = hactl(lab, *words)
        assert got == code and says in err, f"hactl {' '.join(words)} -> {got}: {err}"
    config = tomllib.loads((lab.root / "hactl.toml").read_text())
    (lab.root / "wrong.secret").write_text("0" * 64)
    wrong = lab.root / "wrong.toml"
    wrong.write_text(f"servers = {json.dumps(config['servers'])}\n"
                     'ca = "tls/ca.pem"\nsecret_file = "wrong.secret"\n')
    got, _, err = hactl(lab, "pool-param-set", "name-label=x", config=wrong)
    assert got == 1 and "authentication failed" in err
    assert ok(lab, "pool-param-get", "param-name=generation") == generation  # nothing changed

    old = master(lab)
    assert old is not None
    lab.kill(old)
    wait_for(lambda: master(lab) not in (None, old), 15 * T, "a new master")
    wait_for(lambda: hactl(lab, "pool-list")[0] == 0, 10, "the new master to answer")
    assert settings(lab) == before
    messages = ok(lab, "message-list", "name=ha_host_failed")
    assert "ha_host_failed" in messages


def api_credentials(lab: LocalLab) -> tuple[ssl.SSLContext, bytes]:
    """The TLS context and pool secret hactl uses on ``lab``, for direct API calls."""
    config = tomllib.loads((lab.root / "hactl.toml").read_text())
    context = client_context(lab.root / config["ca"])
    return context, (lab.root / config["secret_file"]).read_text().strip().encode()


async def _set(endpoints: list[tuple[str, int]], lab: LocalLab, key: int) -> bool:
    context, secret = api_credentials(lab)
    call = verbs.parse(["pool-param-set", f"other-config:w{key}={key}"])
    try:
        await asyncio.wait_for(api.call(endpoints, context, secret, call), 10)
    except (api.ApiError, TimeoutError):
        return False
    return True


def test_no_acknowledged_write_is_lost_across_master_kills(lab: LocalLab) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    ok(lab, "pool-ha-enable", "ha-config:timeout=3")
    wait_for(lambda: master(lab) is not None, 15 * T, "a master")
    config = tomllib.loads((lab.root / "hactl.toml").read_text())
    endpoints = [(s.rpartition(":")[0], int(s.rpartition(":")[2])) for s in config["servers"]]
    acknowledged: list[int] = []
    key = 0

    async def stream(count: int) -> None:
        nonlocal key
        for _ in range(count):
            if await _set(endpoints, lab, key):
                acknowledged.append(key)
            key += 1

    for _ in range(2):
        writes = rng.randrange(100, 200)
        kill_after = rng.randrange(5, writes - 5)
        asyncio.run(stream(kill_after))
        old = master(lab)
        assert old is not None, f"seed {seed}"
        lab.kill(old)  # while the stream goes on
        asyncio.run(stream(writes - kill_after))
        wait_for(lambda o=old: master(lab) not in (None, o), 15 * T,  # type: ignore[misc]
                 f"a new master (seed {seed})")
        lab.restart(old)
        wait_for(lambda: all(r.get("phase") == "NORMAL" for r in lab.status()), 15 * T,
                 f"host {old} back (seed {seed})")
    asyncio.run(stream(30))
    record: dict[str, Any] = json.loads(ok(lab, "--json", "pool-param-get",
                                           "param-name=other-config"))
    lost = [k for k in acknowledged if record.get(f"w{k}") != str(k)]
    assert len(acknowledged) >= 100, f"seed {seed}: only {len(acknowledged)} acknowledged"
    assert not lost, f"seed {seed}: acknowledged writes lost: {lost}"


def test_host_evacuate_moves_every_vm_and_ha_follows_them(lab: LocalLab) -> None:
    from hacluster.lab.workloads import runs
    from hacluster.vm.records import double_runs

    ok(lab, "pool-ha-enable", "ha-config:timeout=3")
    wait_for(lambda: master(lab) is not None, 15 * T, "a master")
    wait_for(lambda: "vm-web1" in runs(lab.root), 10, "web1's first record")
    source = next(r["host"] for r in lab.status() if "vm-web1" in r.get("vms", []))
    code, out, err = hactl(lab, "host-evacuate", f"uuid=host-{source:04}")
    assert code == 0, err
    assert "web1: host" in err and "evacuated" in out
    assert ok(lab, "host-param-get", f"uuid=host-{source:04}", "param-name=enabled") == "false"
    target = ok(lab, "vm-param-get", "uuid=vm-web1", "param-name=resident-on")
    assert target not in ("", f"host-{source:04}")
    wait_for(lambda: "vm-web1" in lab.status()[int(target.rpartition("-")[2])]["vms"], 10,
             "web1 running on its new host")
    if source != master(lab):
        lab.kill(source)  # nothing of it to restart: web1 is elsewhere already
        wait_for(lambda: lab.status()[source]["phase"] == "DOWN", 5, "the source down")
        wait_for(lambda: hactl(lab, "message-list", "name=ha_host_failed")[1] != "", 15 * T,
                 "the failure handled")
    for vm, instances in runs(lab.root).items():
        assert not double_runs(instances), f"{vm} ran twice at once: {instances}"
    assert [i.host for i in runs(lab.root)["vm-web1"]][-1] != f"host{source}"


def test_every_other_verb_on_a_live_pool(lab: LocalLab) -> None:
    ok(lab, "pool-ha-enable", "ha-config:timeout=3")
    wait_for(lambda: master(lab) is not None, 15 * T, "a master")
    status = json.loads(ok(lab, "--json", "status"))
    assert status["pool"]["ha_enabled"] and len(status["hosts"]) == 3
    assert status["memory_by_priority"]["host-0000"]["restart"] == 768
    hosts = json.loads(ok(lab, "--json", "host-list"))
    assert [h["uuid"] for h in hosts] == ["host-0000", "host-0001", "host-0002"]
    assert ok(lab, "host-param-get", "uuid=host-0002", "param-name=live") == "true"
    assert "vm-web2" in ok(lab, "vm-list", "resident-on=host-0002")
    assert "agile" in ok(lab, "diagnostic-vm-status", "uuid=vm-web2")
    ok(lab, "host-disable", "uuid=host-0002")
    assert ok(lab, "host-param-get", "uuid=host-0002", "param-name=enabled") == "false"
    ok(lab, "host-enable", "uuid=host-0002")
    assert ok(lab, "host-param-get", "uuid=host-0002", "param-name=enabled") == "true"
    code, _, err = hactl(lab, "host-shutdown", "uuid=host-0002")
    assert code == 1 and "web2" in err  # it runs a protected VM
    ok(lab, "vm-param-set", "uuid=vm-web2", "ha-restart-priority=")
    assert "shutting down" in ok(lab, "host-shutdown", "uuid=host-0002")
    wait_for(lambda: lab.status()[2]["phase"] == "DOWN", 10, "host 2 to stop")
    wait_for(lambda: all(r.get("liveset") == [0, 1] for r in lab.status()[:2]), 15 * T,
             "the others to drop it")
    # its status socket goes first, then the daemon exits: both, not at once
    wait_for(lambda: not lab.running(2), 10, "host 2's daemon to exit")
    assert ok(lab, "message-list", "name=ha_host_failed") == ""  # a shutdown is no failure
    assert ok(lab, "host-param-get", "uuid=host-0002", "param-name=live") == "false"
