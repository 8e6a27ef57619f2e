"""Writing TOML: what toml_fields writes, tomllib reads back as the same values."""

from __future__ import annotations

import math
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacluster.model.tomlfile import toml_fields, toml_value

SCALARS = (st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
           | st.floats(allow_nan=False))
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner,
                                                                           max_size=3),
    max_leaves=12)


@settings(max_examples=300, derandomize=True)  # derandomized: a failure names its input
@given(VALUES)
def test_every_value_reads_back_the_same(value: Any) -> None:
    read = tomllib.loads("\n".join(toml_fields(field=value)))["field"]
    assert read == value or (isinstance(value, tuple) and read == list(value))


def test_hostile_strings_stay_strings() -> None:
    for text in ['a"b', "back\\slash", "new\nline", "tab\t", "del\x7f", "\x00nul", "é ü 漢"]:
        assert tomllib.loads(f"x = {toml_value(text)}")["x"] == text
    assert math.isinf(tomllib.loads(f"x = {toml_value(float('inf'))}")["x"])
    with pytest.raises(TypeError, match="no TOML form"):
        toml_value({1: "keys are strings"})
    with pytest.raises(TypeError, match="no TOML form"):
        toml_value(None)
