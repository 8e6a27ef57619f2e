"""Opening a lab directory with its backend, and reporting a lab command's bad input.

This sits below both command layers that drive labs (``lab`` here, ``chaos``
above it), so that neither needs the other's command module.

Rules: a lab directory remembers the backend it was brought up with
(``lab.json``); bad input (a lab, configuration, SR or OS error) is reported
as one line, ``hacluster: <what to do>``, with exit status 2, and changes
nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from hacluster.lab.local import LabError, LocalLab
from hacluster.mgmt.tls import TLSError
from hacluster.model.address import ConfigError
from hacluster.storage.sr import SRError


def open_lab(root: Path, backend: str | None = None) -> LocalLab:
    """The lab in ``root``, with the backend it was brought up with."""
    if backend is None:
        meta = root / "lab.json"
        backend = json.loads(meta.read_text()).get("backend", "local") if meta.exists() else "local"
    if backend == "netns":
        from hacluster.lab.netns import NetnsLab

        return NetnsLab(root)
    if backend == "docker":
        from hacluster.lab.docker import DockerLab

        return DockerLab(root)
    return LocalLab(root)


def reporting_bad_input(parser: argparse.ArgumentParser, command: Callable[[], int]) -> int:
    """Run ``command``; a lab, configuration, SR, TLS or OS error exits 2 with one line."""
    try:
        return command()
    except BrokenPipeError:
        raise  # the reader went away: no error of ours (hacluster.mgmt.pipes)
    except (ConfigError, SRError, LabError, TLSError, OSError) as error:
        parser.exit(2, f"hacluster: {error}\n")
