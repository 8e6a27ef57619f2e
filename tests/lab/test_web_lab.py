"""What a real local pool shows of itself: every node's metrics and health, the status
page in a real headless Chromium following a master kill, and ``hactl ha-explain``'s
evidence for that kill's removal and restarts."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hacluster.lab.browser import page_dom, screenshot
from hacluster.lab.local import LocalLab

from ..conftest import lab_base_port, wait_for

T = 3.0
pytestmark = pytest.mark.slow  # real pools of node daemons
METRICS = ("hacluster_phase", "hacluster_armed", "hacluster_master", "hacluster_liveset_hosts",
           "hacluster_peer_last_seen_seconds", "hacluster_dropped_inputs",
           "hacluster_slot_write_seconds", "hacluster_slot_read_seconds",
           "hacluster_liveness_lag_seconds", "hacluster_main_loop_lag_seconds",
           "hacluster_fault_handler_seconds", "hacluster_hosts_failed",
           "hacluster_database_generation", "hacluster_api_calls")
MASTER_METRICS = ("hacluster_plan_max_failures", "hacluster_plan_exact",
                  "hacluster_plan_configured_failures", "hacluster_plan_overcommitted",
                  "hacluster_vm_starts")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LocalLab]:
    pool = LocalLab(tmp_path / "lab")
    pool.up(3, T, base_port=lab_base_port())
    try:
        wait_for(lambda: all(r.get("phase") == "NORMAL" for r in pool.status())
                 and any(r.get("master") for r in pool.status()), 60,
                 "every host NORMAL, one of them master")
        yield pool
    finally:
        pool.down()


def read(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def health(lab: LocalLab, index: int) -> tuple[int, dict[str, Any]]:
    code, body = read(lab.http_url(index) + "health")
    return code, json.loads(body)


def hosts_on_page(dom: str) -> dict[str, str]:
    """The page's host rows: name -> whether it shows the host live."""
    return dict(re.findall(r'data-host="([^"]+)" data-live="(true|false)"', dom))


def test_every_node_serves_metrics_and_health(lab: LocalLab) -> None:
    master = next(r["host"] for r in lab.status() if r.get("master"))
    for index in range(3):
        code, text = read(lab.http_url(index) + "metrics")
        assert code == 200
        names = {f.name for f in text_string_to_metric_families(text)}
        missing = [m for m in METRICS if m not in names]
        assert not missing, f"host {index} lacks {missing}"
        if index == master:
            assert not [m for m in MASTER_METRICS if m not in names]
        code, answer = health(lab, index)
        assert (code, answer["healthy"], answer["host"]) == (200, True, index)


def test_pool_ha_margins_shows_every_hosts_measured_margins(lab: LocalLab) -> None:
    text = hactl(lab, "pool-ha-margins")
    for index in range(3):
        assert re.search(rf"^host{index} \(NORMAL, T = 3 s\): ", text, re.MULTILINE), text
    gaps = re.findall(r"heartbeat gap from host (\d) on network 0 +([0-9.]+) s", text)
    assert len(gaps) == 6 and all(0 < float(p99) < T for _, p99 in gaps), text
    assert "slot write latency" in text and "(io_deadline)" in text
    check = subprocess.run([sys.executable, "-m", "hacluster", "node", "--check", "--config",
                            str(lab.host_dir(1) / "node.toml")],
                           capture_output=True, text=True, timeout=60)
    assert re.search(r"margins.*the running daemon's measurements fit T=3 s", check.stdout), \
        check.stdout
    proposed = json.loads(hactl(lab, "--json", "pool-ha-margins", "timeout=1.5"))
    assert proposed["timeout"] == 1.5
    assert all(row["limit"] <= 0.75 for host in proposed["hosts"] for row in host["rows"]
               if row["limit_name"] == "stall limit")


def hacluster_health(lab: LocalLab, index: int) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "hacluster", "health", "--config",
                           str(lab.host_dir(index) / "node.toml")],
                          capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout.strip()


def test_hacluster_health_says_what_the_node_says(lab: LocalLab) -> None:
    assert hacluster_health(lab, 1) == (0, "healthy: armed and NORMAL")
    lab.kill(1)
    code, text = hacluster_health(lab, 1)
    assert code == 1 and "does not answer" in text


def test_a_joining_host_is_unhealthy_until_it_is_a_member_again(lab: LocalLab) -> None:
    lab.kill(2)
    wait_for(lambda: all(2 not in r.get("liveset", [2]) for r in lab.status()
                         if r.get("host") != 2), 30, "host 2 removed")
    lab.restart(2)
    seen: list[tuple[int, str]] = []

    def settled() -> bool:
        try:
            code, answer = health(lab, 2)
        except OSError:
            return False  # not listening yet
        seen.append((code, answer["reason"]))
        return code == 200

    wait_for(settled, 60, "host 2 healthy again")
    assert any(code == 503 and reason.startswith("joining the pool")
               for code, reason in seen), seen


class Hook(http.server.BaseHTTPRequestHandler):
    """A local webhook receiver: every POSTed JSON body into ``received``."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    Hook.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", Hook.received
    finally:
        server.shutdown()


def test_an_alert_script_and_a_webhook_receive_ha_host_failed(lab: LocalLab) -> None:
    got = lab.root / "alerts-received.jsonl"
    script = lab.root / "alerts" / "record.sh"
    script.write_text(f"#!/bin/sh\n(cat; echo) >> {got}\n")
    script.chmod(0o755)
    with webhook() as (url, received):
        hactl(lab, "pool-param-set", "other-config:alert-script=record.sh",
              f"other-config:alert-webhook={url}")
        refused = subprocess.run(
            [sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
             str(lab.root / "hactl.toml"), "pool-param-set", "other-config:alert-script=/bin/sh"],
            capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "not a path" in refused.stderr
        victim = next(r["host"] for r in lab.status() if not r.get("master"))
        lab.kill(victim)

        def delivered() -> bool:
            by_script = got.read_text().splitlines() if got.exists() else []
            return any(json.loads(line)["name"] == "ha_host_failed" for line in by_script) \
                and any(body["name"] == "ha_host_failed" for body in received)

        wait_for(delivered, 60, "ha_host_failed at the script and the webhook")
    alert = next(b for b in received if b["name"] == "ha_host_failed")
    assert f"host{victim}" in alert["body"] and alert["pool"]


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("CI"),
                    reason="needs Debian's chromium (.ci/run installs it; CI fails without)")
def test_the_status_page_shows_the_pool_and_follows_a_master_kill(lab: LocalLab,
                                                                 tmp_path: Path) -> None:
    master = next(r["host"] for r in lab.status() if r.get("master"))
    watcher = (master + 1) % 3
    before = screenshot(lab.http_url(watcher), tmp_path / "before.png")
    assert before.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = page_dom(lab.http_url(watcher))
    assert hosts_on_page(dom) == {"host0": "true", "host1": "true", "host2": "true"}
    assert "dhcp" in dom and "If one host fails" in dom
    lab.kill(master)
    wait_for(lambda: any(r.get("master") and r["host"] != master for r in lab.status()
                         if "host" in r), 60, "a new master")

    def page_shows_it() -> bool:
        dom = page_dom(lab.http_url(watcher))
        return hosts_on_page(dom).get(f"host{master}") == "false" and "ha_host_failed" in dom

    wait_for(page_shows_it, 60, f"the page showing host{master} down and the alert")
    dom = page_dom(lab.http_url(watcher))
    assert "commit: liveset" in dom  # the last fault's timeline
    after = screenshot(lab.http_url(watcher), tmp_path / "after.png")
    assert after.read_bytes() != before.read_bytes()
    assert f"removed host{master}" in dom  # the master's evidence, as ha-explain shows it
    assert "(lease ran out)" in dom or "fence report" in dom
    pattern = re.compile(r"start (\w+) \(restart, order \d, \d+ MiB\) on host\d, was on "
                         rf"host{master}\n\s+why there: (.+)")
    explained = ""

    def both_restarts_explained() -> bool:  # sql starts after dhcp's 2 s order delay
        nonlocal explained
        explained = hactl(lab, "ha-explain", f"host=host{master}")
        return {vm for vm, _ in pattern.findall(explained)} >= {"dhcp", "sql"}

    wait_for(both_restarts_explained, 30, "dhcp's and sql's restarts explained",
             lambda: explained)
    assert f"removed [host{master}]" in explained
    assert "views the rule read:" in explained and "rule: " in explained
    assert re.search(rf"host{master}: (last seen .* unseen [0-9.]+ s >= window [0-9.]+ s"
                     r"|its own fence report)", explained), explained
    assert all(why.startswith("the restart plan") for _, why in pattern.findall(explained))
    as_json = json.loads(hactl(lab, "--json", "ha-explain"))
    assert {r["kind"] for r in as_json["records"]} == {"commit", "restart"}


def hactl(lab: LocalLab, *words: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hacluster.mgmt.hactl", "--config",
                           str(lab.root / "hactl.toml"), *words],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pool_ha_whatif_predicts_what_a_real_kill_then_does(lab: LocalLab) -> None:
    master = next(r["host"] for r in lab.status() if r.get("master"))
    victim = (master + 1) % 3
    predicted = json.loads(hactl(lab, "--json", "pool-ha-whatif", f"fail=host{victim}"))
    assert predicted["fenced"] == [] and predicted["checker"] == []
    assert predicted["master_after"] == [f"host{master}"]  # not the master: it stays
    moves = {vm["vm"]: vm for vm in predicted["vms"]}
    assert moves and all("runs_on" in vm for vm in moves.values())
    text = hactl(lab, "pool-ha-whatif", f"fail=host{victim}")
    assert "timeline:" in text and "VMs that had to move:" in text
    lab.kill(victim)

    def moved() -> bool:
        rows = {r["host"]: set(r.get("vms", [])) for r in lab.status()}
        return all(f"vm-{vm}" in rows.get(int(p["runs_on"][4:]), set())
                   for vm, p in moves.items())

    wait_for(moved, 60, f"every VM of host{victim} where the prediction put it",
             lambda: (predicted, lab.status()))
    assert next(r["host"] for r in lab.status() if r.get("master")) == master
