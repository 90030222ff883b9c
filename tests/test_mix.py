"""The behavior mix: the spec's grammar and errors, resolving names, and the mix in force."""

import random
from collections import Counter

import pytest

from vaurien.behaviors import Behavior
from vaurien.errors import OptionError, PluginError, SpecError
from vaurien.mix import BehaviorMix, Mix, read_spec


def test_rest_goes_to_dummy():
    mix = BehaviorMix.parse("20:delay, 10:error")
    assert mix.entries == ((20.0, ("delay",)), (10.0, ("error",)), (70.0, ("dummy",)))
    assert str(mix) == "20:delay,10:error,70:dummy"


def test_single_behavior_prints_its_name():
    assert str(BehaviorMix.parse("100:blackout")) == "blackout"
    assert str(BehaviorMix.parse("2.5:delay")) == "2.5:delay,97.5:dummy"
    assert BehaviorMix.single("hang") == BehaviorMix.parse("100:hang")


def test_explicit_dummy_gets_the_rest_added():
    assert BehaviorMix.parse("10:dummy,50:hang").entries == ((50.0, ("dummy",)), (50.0, ("hang",)))


def test_a_chain_is_one_entry_of_several_names():
    mix = BehaviorMix.parse("30:delay + bandwidth,10:delay")
    assert mix.entries == ((30.0, ("delay", "bandwidth")), (10.0, ("delay",)), (60.0, ("dummy",)))
    assert mix.names == ["delay", "bandwidth", "dummy"]
    assert str(mix) == "30:delay+bandwidth,10:delay,60:dummy"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("20delay", "'20delay': missing ':' (expected PERCENT:NAME)"),
        ("abc:delay", "'abc:delay': percent must be a number from 0 to 100"),
        ("-5:delay", "'-5:delay': percent must be a number"),
        ("101:delay", "'101:delay': percent 101 is over 100"),
        ("80:delay,30:error", "percents add up to 110, over 100, in '80:delay,30:error'"),
        ("20:", "'20:': missing behavior name"),
        ("20:delay+", "'20:delay+': missing behavior name after ':' or around '+'"),
        ("20:delay,,10:error", "empty item in behavior spec"),
        ("", "empty behavior spec"),
        ("10:delay,10:delay", "'10:delay': behavior 'delay' appears twice"),
        ("10:delay+hang,5:delay+hang", "behavior 'delay+hang' appears twice"),
        ("10:delay+delay", "'10:delay+delay': a behavior appears twice in one chain"),
    ],
)
def test_each_bad_spec_has_one_precise_error(spec, message):
    with pytest.raises(SpecError) as info:
        BehaviorMix.parse(spec)
    assert message in str(info.value)


def test_resolve_maps_names_and_merges():
    mix = BehaviorMix.parse("20:a,30:b,5:x").resolve(lambda name: "x" if name == "a" else name)
    assert mix.entries == ((25.0, ("x",)), (30.0, ("b",)), (45.0, ("dummy",)))


def test_read_spec_imports_paths_only_when_asked():
    behaviors = Behavior.copy()
    assert read_spec("50:vaurien.behaviors.delay.Delay", behaviors).names == ["delay", "dummy"]
    assert read_spec(BehaviorMix.single("hang"), behaviors, imports=False).names == ["hang"]
    with pytest.raises(PluginError, match="unknown behavior 'pkg.Chaos'"):
        read_spec("50:pkg.Chaos", behaviors, imports=False)
    with pytest.raises(PluginError, match="unknown behavior 'dlay'"):
        read_spec("50:dlay", behaviors)


def make(spec, seed=1, options=None, duplex=True):
    return Mix.create(
        read_spec(spec, Behavior),
        Behavior,
        options or {},
        duplex=duplex,
        random=random.Random(seed).random,
    )


def test_the_mix_holds_one_instance_per_name_made_with_its_options():
    mix = make("20:delay,10:error", options={"delay": {"sleep": 0.5}})
    assert sorted(mix.behaviors) == ["delay", "dummy", "error"]
    assert mix.behaviors["delay"].settings["sleep"] == 0.5
    assert mix.dummy is mix.behaviors["dummy"]
    assert make("100:delay").dummy.name == "dummy"
    with pytest.raises(OptionError, match="sleep"):
        make("100:delay", options={"delay": {"sleep": "later"}})


def test_a_chain_is_picked_as_one_choice():
    mix = make("30:delay+bandwidth", seed=1)
    picked = {mix.pick().name for _ in range(1000)}
    assert picked == {"delay+bandwidth", "dummy"}


def test_pick_follows_the_weights():
    mix = make("20:delay,10:error", seed=42)
    counts = Counter(mix.pick().name for _ in range(100_000))
    assert counts["delay"] / 100_000 == pytest.approx(0.20, abs=0.01)
    assert counts["error"] / 100_000 == pytest.approx(0.10, abs=0.01)
    assert counts["dummy"] / 100_000 == pytest.approx(0.70, abs=0.01)


def test_same_seed_same_picks():
    first, second = make("33:delay,33:error", seed=7), make("33:delay,33:error", seed=7)
    assert [first.pick().name for _ in range(200)] == [second.pick().name for _ in range(200)]
    other = make("33:delay,33:error", seed=8)
    assert [first.pick().name for _ in range(200)] != [other.pick().name for _ in range(200)]


def test_zero_percent_is_never_picked():
    mix = make("0:blackout,50:delay")
    assert "blackout" not in {mix.pick().name for _ in range(10_000)}


@pytest.mark.parametrize(
    "direction, acts_to_backend, acts_to_client",
    [
        ("both", True, True),
        ("to_backend", True, False),
        ("upstream", True, False),
        ("to_client", False, True),
        ("downstream", False, True),
    ],
)
def test_for_event_gives_the_dummy_the_direction_a_behavior_sits_out(
    direction, acts_to_backend, acts_to_client
):
    mix = make("100:delay", options={"delay": {"direction": direction}})
    delay = mix.behaviors["delay"]
    assert (mix.for_event(True) is delay) is acts_to_backend
    assert (mix.for_event(False) is delay) is acts_to_client
    assert mix.for_event(True, delay) in (delay, mix.dummy)
    assert mix.for_event(False, mix.dummy) is mix.dummy


def test_exclusive_when_the_protocol_or_a_behavior_reads_the_other_side():
    assert make("50:delay").exclusive is False
    assert make("50:delay", duplex=False).exclusive is True
    behaviors = Behavior.copy()

    class Reader:
        """Reads the other side within its event."""

        name = "reader"
        duplex = False

        def on_before_handle(self, protocol, source, dest, to_backend):
            return True

    behaviors.register(Reader)
    mix = Mix.create(
        read_spec("10:reader", behaviors),
        behaviors,
        {},
        duplex=True,
        random=random.Random(0).random,
    )
    assert mix.exclusive is True
