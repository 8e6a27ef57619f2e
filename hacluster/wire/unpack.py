"""The one way anything read from outside is msgpack-decoded: bounded, and strict.

Rules:

* Every length msgpack reads from the input (string, binary, array, map) is
  bounded by the size of the frame it came in, so a header announcing four
  billion entries is refused before anything is allocated; extension types
  (timestamps included) are refused, since no message carries one.
* Map keys are strings or bytes (``strict_map_key``); containers nest at
  most :data:`MAX_DEPTH` deep (checked without recursion), so no later
  walk of a message can run out of stack.
* Anything that does not decode raises :class:`Malformed` with the reason,
  never another exception: msgpack documents a family of errors "and other
  exceptions", so every one becomes :class:`Malformed`.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_DEPTH = 32  # the deepest legitimate message (an API answer) nests about 6
_LEAVES = frozenset({int, bool, float, str, bytes, type(None)})  # msgpack's scalars


class Malformed(ValueError):
    """Input that is not a bounded msgpack value."""


def unpack(data: bytes, limit: int, items: int | None = None) -> Any:
    """The value packed in ``data`` (at most ``limit`` bytes; arrays and maps of at most
    ``items`` entries if given, tighter than the size bound), or :class:`Malformed`."""
    if len(data) > limit:  # the buffer bound (unpackb has no max_buffer_size of its own)
        raise Malformed(f"{len(data)} bytes exceed {limit}")
    try:
        value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, max_str_len=limit, max_bin_len=limit,
            max_array_len=items or limit, max_map_len=items or limit // 2, max_ext_len=0)
    except Exception as error:  # msgpack: ExtraData, FormatError, StackError, ValueError, ...
        raise Malformed(str(error) or type(error).__name__) from None
    if not nests_within(value, MAX_DEPTH):
        raise Malformed(f"nested deeper than {MAX_DEPTH}")
    return value


def nests_within(value: Any, depth: int) -> bool:
    """Whether lists and maps in ``value`` nest at most ``depth`` deep."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > depth:
            return False
        kinds = set(map(type, children))
        if kinds <= _LEAVES:
            continue  # a flat list (or map): checked at C speed
        if any(issubclass(kind, (dict, list)) for kind in kinds):
            # only containers nest further
            pending.extend((child, level + 1) for child in children
                           if isinstance(child, (dict, list)))
    return True
