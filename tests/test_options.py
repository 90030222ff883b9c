"""Option tables: conversion from the seed's tuple format, parsing and checking."""

import pytest

from vaurien.errors import ConfigError, OptionError, PluginError
from vaurien.options import Option, Range, at_least, between, convert_table, resolve_values


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


def test_a_range_follows_the_default_or_the_choices():
    assert Option.from_declaration("s", ("", float, 1.0, at_least(0))).range == Range(0)
    option = Option.from_declaration("m", ("", int, 2, (1, 2, 3), between(1, 2)))
    assert option.choices == (1, 2, 3) and option.range == Range(1, 2)
    assert Option.from_declaration("n", ("", int, 2, None, at_least(1))).choices is None


@pytest.mark.parametrize(
    "declaration, message",
    [
        (("", float, -1.0, at_least(0)), "default does not pass its own check"),
        (("", float, 1.0, at_least(0), at_least(1)), "after the default come the choices"),
        (("", str, "a", "ab"), "after the default come the choices"),
        (("", int, 1, (1,), (2,)), "after the default come the choices"),
        (("", int, 1, (1,), at_least(0), None), "must be (description, type, default"),
    ],
)
def test_bad_ranges_are_rejected_at_registration(declaration, message):
    with pytest.raises(PluginError, match=message.replace("(", r"\(")):
        Option.from_declaration("x", declaration)


@pytest.mark.parametrize(
    "range_, value, problem",
    [
        (at_least(0), -0.5, "expected a number of at least 0, got -0.5"),
        (between(0, 1), 1.5, "expected a number of at most 1, got 1.5"),
        (Range(0, 1, above_minimum=True), 0.0, "expected a number above 0, got 0.0"),
    ],
)
def test_values_out_of_range_are_refused_whatever_their_form(range_, value, problem):
    option = Option("x", "", float, 0.5, range=range_)
    for given in (value, str(value)):
        with pytest.raises(OptionError) as info:
            option.check(given)
        assert (str(info.value), info.value.problem, info.value.option) == (
            f"x: {problem}",
            problem,
            "x",
        )
    whole = Option("n", "", int, 3, range=between(1, 65535))
    with pytest.raises(OptionError, match="expected a whole number of at most 65535, got 70000"):
        whole.parse("70000")
    assert whole.parse("65535") == 65535


@pytest.mark.parametrize(
    "range_, text",
    [
        (at_least(0.001), "at least 0.001"),
        (Range(maximum=5), "at most 5"),
        (between(0, 65535), "0 to 65535"),
        (Range(0, 1, above_minimum=True), "above 0, at most 1"),
    ],
)
def test_a_range_reads_as_users_write_it(range_, text):
    assert str(range_) == text
    assert Option("x", "", float, None, ("a",), range_).accepts == f"one of a; {text}"


def test_a_custom_type_converts_text_and_takes_other_values_as_converted():
    def level(text):
        if text not in ("low", "high"):
            raise ConfigError(f"expected low or high, got {text!r}")
        return text.upper()

    option = Option("level", "", level, None)
    assert option.parse("low") == "LOW"
    assert option.check("high") == "HIGH"
    with pytest.raises(OptionError) as info:
        option.parse("medium")
    assert info.value.problem == "expected low or high, got 'medium'"
    assert Option("n", "", lambda text: int(text, 16), 0).check(255) == 255
    with pytest.raises(OptionError, match="n: expected <lambda>, got 'zz'"):
        Option("n", "", lambda text: int(text, 16), 0).parse("zz")
