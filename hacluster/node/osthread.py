"""Naming a daemon's threads where the operating system shows them.

Rules:

* Python before 3.14 names only its own ``Thread`` objects; ``top -H``,
  ``ps -L`` and ``/proc/<pid>/task/<tid>/comm`` show every thread of a
  daemon as ``python3``. Each long-lived thread of the node names itself
  (:func:`name_os_thread`) as it starts, so an operator can see which one
  spends what: the liveness loop, an SR lane, the event log.
* The kernel keeps 15 bytes of a name. Naming never fails: where ``prctl``
  is missing the thread keeps its name.
"""

from __future__ import annotations

import contextlib
import ctypes

#: Linux's prctl option that names the calling thread
PR_SET_NAME = 15
#: bytes of a thread name the kernel keeps
NAME_BYTES = 15


def name_os_thread(name: str) -> None:
    """Name the calling thread ``name`` (cut to :data:`NAME_BYTES`) for the OS."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(
            PR_SET_NAME, name.encode()[:NAME_BYTES], 0, 0, 0)
