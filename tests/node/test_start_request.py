"""What the master asks an agent to run: the VM's command and how to know it is ready."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hacluster.lab.workloads import default_pool
from hacluster.model.pooldata import seed
from hacluster.node.master import Guests, start_request
from hacluster.vm.guest import READY_ENV


def test_each_readiness_asks_the_agent_for_its_own_wait(tmp_path: Path) -> None:
    db = seed(default_pool(3))
    guests = Guests(tmp_path)
    host = db.pool.hosts[1].uuid
    plain = start_request(db, guests, "vm-sql", host)
    assert plain["command"] == guests.command("vm-sql", "host1")
    assert not {"env", "ready_file", "ready_command"} & set(plain)

    by_file = replace(db, pool=db.pool.with_vm(replace(db.pool.vm("vm-sql"), ready="file")))
    asked = start_request(by_file, guests, "vm-sql", host)
    assert asked["ready_file"] == str(tmp_path / "vm-sql.ready")
    assert asked["env"] == {READY_ENV: asked["ready_file"]} and "ready_command" not in asked

    by_command = replace(db, pool=db.pool.with_vm(replace(db.pool.vm("vm-sql"),
                                                          ready="command")),
                         commands={"vm-sql": ("postgres", "-D", "/srv/pg")},
                         ready_commands={"vm-sql": ("pg_isready", "-q")})
    asked = start_request(by_command, guests, "vm-sql", host)
    assert asked == {"op": "start", "vm": "vm-sql", "command": ["postgres", "-D", "/srv/pg"],
                     "ready_command": ["pg_isready", "-q"]}
