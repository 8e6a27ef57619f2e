"""The layers of one host's liveness core, composed by
:class:`hacluster.core.node.HostCore`.

Each module is a mixin over one shared state and states its own rules;
each layer builds only on those before it:

* :mod:`~hacluster.core.host.state`: the shared state, config, peers, counters,
  the one way to change phase.
* :mod:`~hacluster.core.host.domains`: which reports count, domains, fresh reports.
* :mod:`~hacluster.core.host.reports`: what a host publishes, watchdog petting.
* :mod:`~hacluster.core.host.lock`: the master lock.
* :mod:`~hacluster.core.host.membership`: arming, joining, admitting, cold
  start, shutdown, liveset commits.
* :mod:`~hacluster.core.host.faults`: the fault handler, fence requests.
* :mod:`~hacluster.core.host.waits`: what a host waits for.
"""
