"""Regenerate the state diagram of docs/design.md from the core's transition table.

The block between the markers of ``hacluster.core.phases`` (the diagram, the
trigger table and the invariants) is generated; ``tests/core/test_phases.py`` fails
when it drifts from the table. Prints the block, or with ``--write`` rewrites
it in place in docs/design.md (or the file given).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hacluster.core import phases

DESIGN = Path(__file__).resolve().parents[1] / "docs" / "design.md"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the block in place")
    parser.add_argument("--doc", type=Path, default=DESIGN, help="the document to rewrite")
    args = parser.parse_args(argv)
    if not args.write:
        print(phases.doc_block())
        return 0
    text = args.doc.read_text()
    updated = phases.replace_doc_block(text)
    if updated != text:
        args.doc.write_text(updated)
        print(f"{args.doc}: phase diagram regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
