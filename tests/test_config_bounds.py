"""Bounded configuration input: the field types a schema uses for text, names and coordinates."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, ValidationError

from pipeline.config import (
    CoordinateMM,
    LongString,
    PersonName,
    ShortText,
    format_validation_error,
    shorten_number,
    shorten_text,
)


class Fields(BaseModel):
    name: PersonName = "DOE^JANE"
    id: LongString = "MRN1"
    note: ShortText = ""
    x: CoordinateMM = 0.0


def _message(**values) -> str:
    with pytest.raises(ValidationError) as caught:
        Fields(**values)
    return format_validation_error("case.yaml", caught.value)


@pytest.mark.parametrize("values, expected", [
    ({"name": "DOE\x00^JANE"}, "U+0000 at position 4"),
    ({"name": "A" * 65}, "at most 64 characters, got 65"),
    ({"name": "A^B^C^D^E^F"}, "at most 5 components"),
    ({"name": "DOE\\JANE"}, "backslash"),
    ({"id": "x" * 65}, "65 characters, longer than the limit of 64"),
    ({"id": "MRN\n1"}, "one line"),
    ({"note": "\x1b[31mred"}, "U+001B at position 1"),
    ({"note": "n" * 1025}, "1025 characters"),
    ({"x": 1e308}, "less than or equal to 10000"),
    ({"x": math.nan}, "finite"),
    ({"x": -math.inf}, "finite"),
])
def test_bad_values_are_refused_by_field(values, expected):
    message = _message(**values)
    field = next(iter(values))
    assert f"field '{field}'" in message and expected in message
    assert len(message) < 300 and "\x1b" not in message and "\x00" not in message


def test_good_values_pass_unchanged():
    fields = Fields(name="DOE^JANE^Q^DR^JR", id="M" * 64, note="two\nlines\tand a tab", x=-9999.5)
    assert (fields.name, fields.id, fields.x) == ("DOE^JANE^Q^DR^JR", "M" * 64, -9999.5)


@pytest.mark.parametrize("value, shown", [
    (1e308, "1e+308"), (-2.5e40, "-2.5e+40"), (12345, "12345"), (10 ** 400, "an integer of 401 digits"),
])
def test_numbers_in_messages_are_short(value, shown):
    assert shorten_number(value) == shown


def test_long_text_in_messages_is_cut_and_counted():
    shown = shorten_text("y" * 100_000)
    assert shown.endswith("(100000 characters)") and len(shown) < 100
