"""The nesting bound: the fast walk judges every value as the plain walk does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.wire.unpack import Malformed, nests_within, unpack


def plain_nests_within(value: Any, depth: int) -> bool:
    """The reference: every child of every container walked."""
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
        pending.extend((child, level + 1) for child in children)
    return True


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=3) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner,
                                                                 max_size=3),
    max_leaves=40)


@settings(max_examples=400, derandomize=True, database=None)
@given(values, st.integers(0, 6))
def test_the_nesting_bound_agrees_with_the_plain_walk(value: Any, depth: int) -> None:
    assert nests_within(value, depth) == plain_nests_within(value, depth)


def test_deep_nesting_is_refused_and_flat_lists_pass() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    assert not nests_within(deep, 32) and nests_within(deep, 40)
    assert nests_within([1, b"x", None, True, *range(5000)], 1)
    assert not nests_within([1, 2, {"a": 1}], 1) and nests_within([1, 2, {"a": 1}], 2)
    try:
        unpack(b"\x91" * 40 + b"\x01", 1024)
    except Malformed as error:
        assert "nested deeper than 32" in str(error)
    else:
        raise AssertionError("40 nested arrays decoded")
