"""Fixtures of the deploy tests: an SR file, a pool made by pool init, a FUSE medium.

The FUSE medium is the lab's storage fault layer (:mod:`hacluster.lab.faultfs`)
over a file: a real file system the kernel serves, which can refuse O_DIRECT
opens or fail every request. It needs root, /dev/fuse and fusermount3 (CI has
them); without them those tests skip, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacluster.deploy.hostlist import parse_hosts
from hacluster.deploy.init import Created, InitRequest, init_pool
from hacluster.lab.poll import wait_until

FUSE_MISSING = (None if os.geteuid() == 0 and os.path.exists("/dev/fuse")
                and shutil.which("fusermount3") else "needs root, /dev/fuse and fusermount3")
SR_SIZE = 16 * 1024 * 1024


def new_sr(path: Path, size: int = SR_SIZE) -> Path:
    with path.open("xb") as out:
        out.truncate(size)
    return path


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


@pytest.fixture
def fuse_medium(tmp_path: Path) -> Iterator[Callable[[bool], tuple[Path, Path]]]:
    """``mount(refuse_direct)``: a 16 MiB SR file served by the FUSE fault layer, as
    ``(sr, control)``; every mount is undone afterwards."""
    if FUSE_MISSING is not None:
        pytest.skip(FUSE_MISSING)
    mounts: list[tuple[Path, subprocess.Popen[bytes]]] = []

    def mount(refuse_direct: bool) -> tuple[Path, Path]:
        where = tmp_path / f"fuse{len(mounts)}"
        where.mkdir()
        backing = new_sr(tmp_path / f"backing{len(mounts)}")
        process = subprocess.Popen(
            [sys.executable, "-m", "hacluster.lab.faultfs", "--backing", str(backing),
             "--mount", str(where), *(["--refuse-direct"] if refuse_direct else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        mounts.append((where, process))
        if wait_until(lambda: (where / "control").exists() or process.poll() is not None,
                      10) is None or not (where / "control").exists():
            pytest.fail("the FUSE layer did not start")
        return where / "sr", where / "control"

    try:
        yield mount
    finally:
        for where, process in mounts:
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False,
                           capture_output=True)
            process.kill()
            process.wait(10)
