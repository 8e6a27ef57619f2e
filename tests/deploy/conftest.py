"""Fixtures of the deploy tests: an SR file and a pool made by pool init (the FUSE
medium, ``fuse_medium``, is shared: :mod:`tests.conftest`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hacluster.deploy.hostlist import parse_hosts
from hacluster.deploy.init import Created, InitRequest, init_pool

from ..conftest import new_sr


def request(tmp_path: Path, **changes: object) -> InitRequest:
    """A 3-host pool on 127.0.0.x into ``tmp_path/pool`` on ``tmp_path/sr.img``."""
    sr = tmp_path / "sr.img"
    if not sr.exists():
        new_sr(sr)
    fields: dict[str, object] = {
        "name": "test", "hosts": tuple(parse_hosts("127.0.0.1,127.0.0.2,127.0.0.3", 7000)),
        "sr": sr, "out": tmp_path / "pool", "timeout": 5.0}
    fields.update(changes)
    return InitRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def created(tmp_path: Path) -> Created:
    return init_pool(request(tmp_path))
