"""The command-line tools' standard output: a reader that goes away is no error.

Rules: when whoever reads a tool's output stops early (``| head``), the rest
of the output is dropped without a traceback and the tool exits with
:data:`CLOSED_PIPE` (128 + SIGPIPE, what a shell shows for a tool that
SIGPIPE ended), so ``set -o pipefail`` scripts see the usual status.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Protocol

CLOSED_PIPE = 141


class Main(Protocol):
    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def quiet_on_closed_pipe(main: Main) -> Main:
    """``main`` that ends quietly when its standard output is closed under it."""

    @functools.wraps(main)
    def guarded(argv: Sequence[str] | None = None) -> int:
        try:
            code = main(argv)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            # what is still buffered can go nowhere: point stdout at /dev/null so the
            # interpreter's own flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return CLOSED_PIPE

    return guarded
