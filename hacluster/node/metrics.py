"""The node's status as Prometheus metrics (the text format, by prometheus-client).

Rules:

* Metrics are made from one status snapshot (:meth:`Node.status`) at each
  scrape, never kept up to date event by event: nothing on the liveness loop
  pays for a metric, and a scrape shows one consistent moment.
* Every name starts ``hacluster_``; seconds are seconds, counters end
  ``_total``. A figure the node does not have (a plan on a host that is not
  master, a quantile of nothing yet) is left out, never shown as zero.
* Label values come from bounded sets only: phases, peers' indices, the
  verb table's verbs, drop reasons, restart priorities. Nothing a caller
  sends becomes a label.
* :data:`PHASES` lists every phase a node can report, so the ``phase``
  state set always has the same series (1 for the current one, 0 for the
  others).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.samples import Sample

from hacluster.core.messages import Phase

__all__ = ["CONTENT_TYPE", "PHASES", "families", "render"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: every phase the status can report: the core's, HA off, and a liveness loop that did not answer
PHASES = (*(p.name for p in Phase), "HA_OFF", "UNKNOWN")
#: the measured figures (hacluster.node.measure) and what each metric says of them
MEASURED = {
    "slot_write": ("slot_write_seconds", "heartbeat SR slot writes, from request to answer"),
    "slot_read": ("slot_read_seconds", "heartbeat SR reads of every slot, request to answer"),
    "liveness_lag": ("liveness_lag_seconds", "how late the liveness core's timer fired"),
    "main_lag": ("main_loop_lag_seconds", "how late the main loop woke a 0.25 s probe"),
    "fault_handler": ("fault_handler_seconds", "fault handlers, from leaving NORMAL to NORMAL"),
}


def render(status: Mapping[str, Any]) -> bytes:
    """The Prometheus text exposition of ``status``."""
    return generate_latest(_Collected(status))


class _Collected:
    """What ``generate_latest`` asks of a registry: the families, once."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        return families(self.status)


def families(status: Mapping[str, Any]) -> Iterator[Metric]:
    """The metric families of one status snapshot."""
    yield _gauge("up", "1: this node's daemon answers (its liveness loop: see phase)", 1)
    yield _gauge("timeout_seconds", "T, the pool's HA timeout this node runs with",
                 status.get("timeout"))
    phase = GaugeMetricFamily("hacluster_phase", "the liveness phase (1 for the current one)",
                              labels=["phase"])
    current = status.get("phase")
    for name in PHASES:
        phase.add_metric([name], 1 if name == current else 0)
    yield phase
    yield _gauge("armed", "1 if HA is armed on this node", int(bool(status.get("armed"))))
    yield _gauge("master", "1 if this node is the pool's master", int(bool(status.get("master"))))
    yield _gauge("liveset_hosts", "hosts in this node's liveset", len(status.get("liveset", ())))
    if "members" in status:
        yield _gauge("members", "hosts the pool's member table lists", len(status["members"]))
    yield from _peer_ages(status)
    yield from _counters(status)
    measured = status.get("measured", {})
    for key, (name, text) in MEASURED.items():
        if key in measured:
            yield from _summary(name, text, measured[key])
    yield from _pool(status.get("pool"))
    yield from _mgmt(status.get("mgmt"))


def _gauge(name: str, text: str, value: float | None) -> Metric:
    family = GaugeMetricFamily(f"hacluster_{name}", text)
    if value is not None:
        family.add_metric([], value)
    return family


def _counter(name: str, text: str, value: float) -> Metric:
    return CounterMetricFamily(f"hacluster_{name}", text, value=value)


def _counted(name: str, text: str, labels: list[str],
             entries: Iterable[Mapping[str, Any]]) -> Metric:
    """A labelled counter from entries that each name their labels and a ``count``."""
    family = CounterMetricFamily(f"hacluster_{name}", text, labels=labels)
    for entry in entries:
        family.add_metric([entry[label] for label in labels], entry["count"])
    return family


def _peer_ages(status: Mapping[str, Any]) -> Iterator[Metric]:
    ages = GaugeMetricFamily("hacluster_peer_last_seen_seconds",
                             "seconds since each peer was last seen, per channel",
                             labels=["peer", "channel"])
    for channel, key in (("network", "last_beat_age"), ("statefile", "last_slot_age")):
        for peer, age in sorted(status.get(key, {}).items(), key=lambda item: int(item[0])):
            ages.add_metric([str(peer), channel], age)
    yield ages


def _counters(status: Mapping[str, Any]) -> Iterator[Metric]:
    dropped = CounterMetricFamily("hacluster_dropped_inputs",
                                  "heartbeats and slots dropped, by reason", labels=["reason"])
    for reason, count in sorted(status.get("dropped", {}).items()):
        dropped.add_metric([reason], count)
    yield dropped
    received = CounterMetricFamily("hacluster_heartbeats_received",
                                   "heartbeat datagrams received, per heartbeat network",
                                   labels=["network"])
    for network, count in enumerate(status.get("received_per_network", ())):
        received.add_metric([str(network)], count)
    yield received
    yield _counter("liveset_commits", "liveset commits this node took part in",
                   status.get("commits", 0))
    yield _counter("hosts_failed", "hosts those commits removed as failed (each fenced "
                   "itself or was dead): not those that left cleanly", status.get("failures", 0))
    log = status.get("log", {})
    yield _counter("eventlog_dropped", "event log records lost (queue full or disk refused)",
                   log.get("dropped", 0))


def _summary(name: str, text: str, figures: Mapping[str, Any]) -> Iterator[Metric]:
    """A summary (quantiles of the recent values, count and sum since start) and its max."""
    family = Metric(f"hacluster_{name}", text, "summary")
    for key, quantile in (("p50", "0.5"), ("p99", "0.99")):
        if figures.get(key) is not None:
            family.samples.append(Sample(family.name, {"quantile": quantile}, figures[key]))
    family.samples.append(Sample(f"{family.name}_count", {}, figures["count"]))
    family.samples.append(Sample(f"{family.name}_sum", {}, figures["sum"]))
    yield family
    if figures["count"]:
        yield _gauge(f"{name}_max", f"the largest of: {text}", figures["max"])


def _pool(pool: Mapping[str, Any] | None) -> Iterator[Metric]:
    """The master's duties: its VM starts and its recovery plan."""
    if pool is None:
        return
    yield _counted("vm_starts", "VM starts by this master, by restart priority and outcome",
                   ["priority", "outcome"], pool.get("starts", ()))
    yield _gauge("vms_running", "VMs the pool database has running", len(pool.get("running", {})))
    yield _gauge("vms_halted", "VMs the pool database has halted", len(pool.get("halted", ())))
    plan = pool.get("plan") or {}
    if "max_failures" in plan:
        yield _gauge("plan_max_failures", "host failures the recovery plan covers",
                     plan["max_failures"])
        yield _gauge("plan_exact", "1 if that number is exact (else a lower bound)",
                     int(bool(plan["exact"])))
        yield _gauge("plan_configured_failures", "ha-host-failures-to-tolerate",
                     plan["configured"])
        yield _gauge("plan_overcommitted", "1 if the plan covers fewer failures than configured",
                     int(bool(plan["overcommitted"])))


def _mgmt(mgmt: Mapping[str, Any] | None) -> Iterator[Metric]:
    if mgmt is None:
        return
    yield _gauge("database_generation", "the newest pool database generation known here",
                 mgmt.get("generation"))
    yield _counted("api_calls", "management API calls answered here, by verb and result",
                   ["verb", "result"], mgmt.get("calls", ()))
    api = mgmt.get("api", {})
    if "refused" in api:
        yield _counter("api_refused", "API connections that did not authenticate, or sent a "
                       "bad request", api["refused"])
