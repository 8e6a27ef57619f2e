"""Reading a TOML file, and checking its values, with errors that name the file and what is wrong.

Rules:

* :func:`read_toml` gives the file's table; an unreadable or invalid file
  raises the caller's error type saying why.
* :func:`checked` is the one type check of a value read from TOML, shared by
  the node's configuration and pool files: a bool is never a number, an
  integer is accepted where a float is expected, and a number must be finite
  and at most :data:`MAX_NUMBER` in size (beyond it no float or JSON reader
  keeps it exactly). :func:`in_range` adds bounds. Errors show a long value
  shortened (:func:`brief`), never the whole of it.
* :func:`toml_fields` writes ``name = value`` lines that :func:`read_toml`
  reads back as the same values (strings escaped, lists nested), for the files
  this program writes (pool files, node and hactl configurations).
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

MAX_NUMBER = 2**53
KIND_NAMES = {bool: "a boolean (true or false)", int: "a whole number", float: "a number",
              str: "a string", list: "a list", dict: "a table"}


def read_toml(path: str | Path, error: type[ValueError]) -> dict[str, Any]:
    """The file's table; an unreadable or invalid file raises ``error`` saying why."""
    where = str(path)
    try:
        return tomllib.loads(Path(path).read_text())
    except OSError as failure:
        raise error(f"{where}: {failure.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as failure:
        raise error(f"{where}: not valid TOML: {failure}") from None


def brief(value: Any, limit: int = 60) -> str:
    """``repr(value)``, shortened to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def checked(value: Any, kind: type, what: str, error: type[ValueError]) -> Any:
    """``value`` as a ``kind`` (an int where a float is expected becomes one), or ``error``
    saying that ``what`` must be one; numbers must be finite and within ±MAX_NUMBER."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    wanted = number if kind is float else isinstance(value, kind)
    if not wanted or (isinstance(value, bool) and kind is not bool):
        raise error(f"{what} must be {KIND_NAMES.get(kind, kind.__name__)}, got {brief(value)}")
    if number and not (math.isfinite(value) and abs(value) <= MAX_NUMBER):
        raise error(f"{what} must be a finite number of at most {MAX_NUMBER}, "
                    f"got {brief(value)}")
    return float(value) if kind is float else value


def in_range(value: Any, kind: type, low: float, high: float, what: str,
             error: type[ValueError]) -> Any:
    """:func:`checked`, and within ``low..high`` (inclusive)."""
    number = checked(value, kind, what, error)
    if not low <= number <= high:
        raise error(f"{what} must be in {low:g}..{high:g}, got {brief(value)}")
    return number


def toml_value(value: Any) -> str:
    """``value`` (bool, int, float, str, a list of them, or a table of them keyed by
    strings) as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # JSON's escapes are TOML's; TOML also refuses a raw DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def toml_fields(**values: Any) -> list[str]:
    """One ``name = value`` line per field, in order."""
    return [f"{name} = {toml_value(value)}" for name, value in values.items()]
