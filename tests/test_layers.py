"""The layering of docs/design.md, enforced by import-linter's contracts in pyproject.toml.

Rules:

* The tree keeps every contract: the layers (core < wire < storage | vm |
  model | sim < mgmt < node < deploy < lab < chaos < cli, a new top-level package must
  be placed), the independence of the middle layer, the purity of the core (no
  asyncio, sockets, files, processes, clocks or randomness), no import cycles
  between siblings.
* Each contract catches a violation: a copy of the tree with one planted
  import breaks the contract it must, and the report names the planted module.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``hacluster`` package of ``tree`` with its pyproject.toml."""
    words = [word for contract in contracts for word in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *words, str(tree / "pyproject.toml")],
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"},
        capture_output=True, text=True, timeout=120, check=False)


def test_the_tree_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


PLANTED = [
    # (contract, {path under hacluster/: text}) - every plant breaks its contract
    ("pure-core", {"core/planted.py": "import time\n"}),
    ("pure-core", {"core/planted.py": "from pathlib import Path\n"}),
    ("layers", {"core/planted.py": "from hacluster.wire import codec\n"}),
    ("layers", {"mgmt/planted.py": "from hacluster.node import config\n"}),
    ("layers", {"node/planted.py": "from hacluster.deploy import poolfiles\n"}),
    ("layers", {"lab/planted.py": "def later() -> None:\n"
                                  "    from hacluster.chaos import command\n"}),
    ("layers", {"model/planted.py": "from hacluster.sim import network\n"}),
    ("layers", {"planted/__init__.py": "from hacluster.core import timing\n"}),
    ("middle", {"sim/planted.py": "from hacluster.wire import codec\n"}),
    ("acyclic", {"lab/planted.py": "from hacluster.lab import planted_too\n",
                 "lab/planted_too.py": "from hacluster.lab import planted\n"}),
]


@pytest.mark.parametrize(("contract", "plant"), PLANTED,
                         ids=[f"{c}-{next(iter(p))}" for c, p in PLANTED])
def test_a_planted_violation_breaks_its_contract(tmp_path: Path, contract: str,
                                                 plant: dict[str, str]) -> None:
    shutil.copytree(ROOT / "hacluster", tmp_path / "hacluster",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    assert lint_imports(tmp_path, contract).returncode == 0  # the copy, before planting
    for path, text in plant.items():
        (tmp_path / "hacluster" / path).parent.mkdir(exist_ok=True)
        (tmp_path / "hacluster" / path).write_text(text)
    done = lint_imports(tmp_path, contract)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 broken" in done.stdout and "planted" in done.stdout, done.stdout
