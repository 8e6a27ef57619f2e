"""Fixtures of the simulator's canaries."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hacluster.core.host.reports import Reports


@pytest.fixture
def blind_lease(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The lease renewed whatever the others see (issue #14's rule undone): the
    watchdog fires a lease after the host last ran, as before leases it fired a
    watchdog timeout after it last petted."""
    monkeypatch.setattr(Reports, "_lease_base", lambda self: self.now)
    yield
