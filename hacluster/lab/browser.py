"""A headless Chromium for the status page: the DOM after its script ran, and screenshots.

Rules:

* Debian's ``chromium`` is run headless, with a fresh profile each time and
  every background service off (this machine has no way out: without those
  flags Chromium keeps trying to reach Google's hosts). ``--virtual-time-budget``
  lets the page's script fetch and draw before the DOM or the picture is taken.
* Missing Chromium is a :class:`BrowserError` naming the package to install.
* ``netns`` runs the browser inside a lab host's network namespace, where
  that host's page listens on loopback.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
SCRIPT_TIME_MS = 3000  # virtual time the page's script gets before the DOM or the picture
RUN_TIMEOUT = 60.0


class BrowserError(RuntimeError):
    """Chromium is missing or failed."""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise BrowserError("no chromium on PATH: install Debian's 'chromium' package "
                           "(apt-get install chromium)")
    return found


def _run(url: str, action: list[str], netns: str | None) -> str:
    with tempfile.TemporaryDirectory(prefix="hacluster-chromium-") as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}",
                   f"--virtual-time-budget={SCRIPT_TIME_MS}", *action, url]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish with {url} within "
                               f"{RUN_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise BrowserError(f"chromium failed on {url} (exit {done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return done.stdout


def page_dom(url: str, netns: str | None = None) -> str:
    """The page's DOM (HTML) once its script has run."""
    return _run(url, ["--dump-dom"], netns)


def screenshot(url: str, path: Path, width: int = 1400, height: int = 1000,
               netns: str | None = None) -> Path:
    """A PNG of the page once its script has run."""
    _run(url, [f"--screenshot={path}", f"--window-size={width},{height}"], netns)
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot of {url} to {path}")
    return path
