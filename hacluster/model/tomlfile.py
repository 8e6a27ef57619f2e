"""Reading a TOML file with an error that names the file and what is wrong."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


def read_toml(path: str | Path, error: type[ValueError]) -> dict[str, Any]:
    """The file's table; an unreadable or invalid file raises ``error`` saying why."""
    where = str(path)
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as failure:
        raise error(f"{where}: {failure.strerror}") from None
    except tomllib.TOMLDecodeError as failure:
        raise error(f"{where}: not valid TOML: {failure}") from None
