"""Screenshots of the status page for the docs: a local 3-host pool, then after its
master is killed (headless Chromium, hacluster.lab.browser).

    python tools/page_screenshots.py docs/status-page.png docs/status-page-failover.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hacluster.lab.browser import screenshot
from hacluster.lab.local import LocalLab
from hacluster.lab.poll import wait_until

T = 3.0
SETTLE = 60.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="PNG of the settled pool")
    parser.add_argument("after", type=Path, help="PNG once the master's VMs run elsewhere")
    parser.add_argument("--base-port", type=int, default=27000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hacluster-page-") as root:
        lab = LocalLab(Path(root) / "lab")
        lab.up(3, T, base_port=args.base_port)
        try:
            def master() -> int | None:
                return next((r["host"] for r in lab.status()
                             if r.get("master") and r.get("phase") == "NORMAL"), None)

            if wait_until(lambda: master() is not None, SETTLE) is None:
                raise SystemExit("the pool did not settle")
            old = master()
            assert old is not None
            watcher = (old + 1) % 3
            time.sleep(2 * T)  # a few beats: ages and the plan drawn
            screenshot(lab.http_url(watcher), args.before)
            lab.kill(old)
            if wait_until(lambda: master() not in (None, old), SETTLE) is None:
                raise SystemExit("no new master")
            time.sleep(2 * T)  # the restarts answered
            screenshot(lab.http_url(watcher), args.after)
        finally:
            lab.down()
    print(f"wrote {args.before} and {args.after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
