"""The behavior spec: grammar, errors, and the weighted pick."""

import random
from collections import Counter

import pytest

from vaurien.errors import SpecError
from vaurien.mix import BehaviorMix, Picker


def test_rest_goes_to_dummy():
    mix = BehaviorMix.parse("20:delay, 10:error")
    assert mix.entries == ((20.0, "delay"), (10.0, "error"), (70.0, "dummy"))
    assert str(mix) == "20:delay,10:error,70:dummy"


def test_single_behavior_prints_its_name():
    assert str(BehaviorMix.parse("100:blackout")) == "blackout"
    assert str(BehaviorMix.parse("2.5:delay")) == "2.5:delay,97.5:dummy"


def test_explicit_dummy_gets_the_rest_added():
    assert BehaviorMix.parse("10:dummy,50:hang").entries == ((50.0, "dummy"), (50.0, "hang"))


@pytest.mark.parametrize(
    "spec, message",
    [
        ("20delay", "'20delay': missing ':'"),
        ("abc:delay", "'abc:delay': percent must be a number"),
        ("-5:delay", "'-5:delay': percent must be a number"),
        ("101:delay", "over 100"),
        ("80:delay,30:error", "percents add up to 110, over 100"),
        ("20:", "missing behavior name"),
        ("20:delay,,10:error", "empty item"),
        ("", "empty behavior spec"),
        ("10:delay,10:delay", "appears twice"),
    ],
)
def test_each_bad_spec_has_one_precise_error(spec, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        BehaviorMix.parse(spec)


def test_resolve_maps_names_and_merges():
    mix = BehaviorMix.parse("20:a,30:b").resolve(lambda name: "x" if name == "a" else name)
    assert mix.entries == ((20.0, "x"), (30.0, "b"), (50.0, "dummy"))


def test_pick_follows_the_weights():
    mix = BehaviorMix.parse("20:delay,10:error")
    picker = Picker(mix, {name: name for name in mix.names}, random.Random(42).random)
    counts = Counter(picker() for _ in range(100_000))
    assert counts["delay"] / 100_000 == pytest.approx(0.20, abs=0.01)
    assert counts["error"] / 100_000 == pytest.approx(0.10, abs=0.01)
    assert counts["dummy"] / 100_000 == pytest.approx(0.70, abs=0.01)


def test_same_seed_same_picks():
    mix = BehaviorMix.parse("33:delay,33:error")
    instances = {name: name for name in mix.names}
    first = Picker(mix, instances, random.Random(7).random)
    second = Picker(mix, instances, random.Random(7).random)
    assert [first() for _ in range(200)] == [second() for _ in range(200)]


def test_zero_percent_is_never_picked():
    mix = BehaviorMix.parse("0:blackout,50:delay")
    picker = Picker(mix, {name: name for name in mix.names}, random.Random(1).random)
    assert "blackout" not in {picker() for _ in range(10_000)}
