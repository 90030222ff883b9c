"""Option tables: conversion from the seed's tuple format, parsing and checking."""

import pytest

from vaurien.errors import OptionError, PluginError
from vaurien.options import Option, convert_table, resolve_values


def test_tuple_becomes_an_option():
    option = Option.from_declaration("mode", ("What to do", str, "fast", ("fast", "slow")))
    assert option == Option("mode", "What to do", str, "fast", ("fast", "slow"))


@pytest.mark.parametrize(
    "type_, text, value",
    [
        (bool, "yes", True),
        (bool, "False", False),
        (bool, "0", False),
        (int, " 12 ", 12),
        (float, "0.25", 0.25),
        (str, "a b", "a b"),
    ],
)
def test_parse_text(type_, text, value):
    assert Option("x", "", type_, type_()).parse(text) == value


@pytest.mark.parametrize(
    "type_, text", [(bool, "maybe"), (int, "1.5"), (float, "abc"), (float, "nan")]
)
def test_parse_errors_name_the_option(type_, text):
    with pytest.raises(OptionError, match="^x: ") as info:
        Option("x", "", type_, type_()).parse(text)
    assert info.value.option == "x"


def test_check_is_strict_on_json_types():
    assert Option("s", "", float, 1.0).check(2) == 2.0
    with pytest.raises(OptionError):
        Option("s", "", float, 1.0).check(True)
    with pytest.raises(OptionError):
        Option("n", "", int, 1).check(1.5)
    with pytest.raises(OptionError):
        Option("b", "", bool, False).check(1)
    assert Option("b", "", bool, False).check("true") is True


def test_choices_are_enforced():
    option = Option("mode", "", str, "a", ("a", "b"))
    with pytest.raises(OptionError, match="'c' is not one of a, b"):
        option.check("c")


@pytest.mark.parametrize(
    "table, message",
    [
        ({"x": ("no type",)}, "must be"),
        ({"x": ("desc", int, "not an int")}, "default does not pass"),
        ({"x": ("desc", str, "z", ("a", "b"))}, "default does not pass"),
        ({"bad name": ("desc", int, 1)}, "not an identifier"),
        ([("x", 1)], "must be a mapping"),
    ],
)
def test_broken_tables_are_rejected_at_registration(table, message):
    with pytest.raises(PluginError, match=message):
        convert_table("behavior 'b'", table)


def test_resolve_values_fills_defaults_and_rejects_unknown():
    options = convert_table("t", {"sleep": ("", float, 1.0), "before": ("", bool, True)})
    assert resolve_values(options, {"sleep": 2}) == {"sleep": 2.0, "before": True}
    with pytest.raises(OptionError, match="unknown option 'slep'") as info:
        resolve_values(options, {"slep": 2})
    assert info.value.option == "slep"
