"""The chaos in force on one proxy: its rules first, then its behavior mix or a scenario's step.

A :class:`Plan` is a frozen value: the proxy's own mix (``--behavior``), its rules compiled for
its protocol, each with its mix, and the scenario running, if any, with a mix per step and where
it is. The proxy keeps one (``proxy.plan``) and :class:`Chaos` puts a new one in force in one
assignment: when the rules or the behavior change, when a scenario starts, ends or moves to its
next step. A pick reads ``proxy.plan`` once, so it sees one plan or the next, never a blend.

:class:`Chaos` also answers a session's pick (:meth:`Chaos.mix_for`): the first rule that takes
the request supplies the mix, else the scenario's step, else the proxy's mix; it counts the picks
of each rule and each step, and moves the scenario on when a pick finds its step over.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from vaurien.errors import OptionError, SpecError, VaurienError
from vaurien.mix import BehaviorMix, Mix, read_spec
from vaurien.rules import Matcher, Rule, compile_rule, number_rules, prefilter
from vaurien.scenario import (
    BYTES,
    CONNECTIONS,
    PICKS,
    SHOWN_UNITS,
    TIME,
    Position,
    Scenario,
    begin,
    left,
    over,
    settle,
)

log = logging.getLogger(__name__)

#: Seconds between two sums of the bytes relayed, while a step counts them (a sum reads every
#: session's counters).
BYTES_READ_INTERVAL = 0.01


@dataclasses.dataclass(frozen=True, eq=False)
class ActiveRule:
    """A rule in force: compiled for the proxy's protocol, with its mix."""

    matcher: Matcher
    mix: Mix

    @property
    def name(self) -> str:
        return self.matcher.rule.name


@dataclasses.dataclass(frozen=True, eq=False)
class RunningScenario:
    """A scenario in force, with its steps' mixes, made once when it starts."""

    scenario: Scenario
    mixes: tuple[Mix, ...]


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """What picks a behavior for each event of one proxy: ``rules`` first, then the step of the
    ``running`` scenario at ``position``, else ``behavior``, the proxy's own mix.

    Derived: ``mix`` is the mix of what no rule takes; ``direct`` is true without rules and
    scenario (``mix`` is then all there is); ``needs_fields`` whether a rule tests more than the
    client, ``prefilter`` a test every request that such a rule takes passes
    (:func:`vaurien.rules.prefilter`); ``exclusive`` whether a session's events must run one at
    a time for one of its mixes; ``step`` the step's number as stats show it; ``quiet`` the
    ids of the dummies of its mixes whose hooks do nothing (an event one of them gets may be
    relayed without calling them, whichever mix it was drawn from).
    """

    behavior: Mix
    rules: tuple[ActiveRule, ...] = ()
    running: RunningScenario | None = None
    position: Position | None = None
    mix: Mix = dataclasses.field(init=False)
    direct: bool = dataclasses.field(init=False)
    needs_fields: bool = dataclasses.field(init=False)
    prefilter: tuple[tuple[str, Any], ...] = dataclasses.field(init=False)
    exclusive: bool = dataclasses.field(init=False)
    step: str = dataclasses.field(init=False)
    quiet: frozenset[int] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        running, position = self.running, self.position
        mix = running.mixes[position.index] if running is not None else self.behavior
        mixes = [self.behavior, *(rule.mix for rule in self.rules)]
        if running is not None:
            mixes += running.mixes
        derived = {
            "mix": mix,
            "direct": not self.rules and running is None,
            "needs_fields": any(rule.matcher.tests for rule in self.rules),
            "prefilter": prefilter([rule.matcher for rule in self.rules]),
            "exclusive": any(each.exclusive for each in mixes),
            "step": str(position.index + 1) if position is not None else "",
            # By id: a plugin's instances need not be hashable. The plan keeps them alive.
            "quiet": frozenset(id(each.dummy) for each in mixes if each.quiet_dummy),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)


class SessionRules:
    """The rules that may take a session's requests: those whose client test holds for its
    client, up to the first that takes every request (``always``, if any). ``key`` is the rule
    set it was made for; ``wants_fields`` says whether a request's fields decide;
    ``prefilter`` is the plan's (:func:`vaurien.rules.prefilter`)."""

    __slots__ = ("key", "rules", "always", "wants_fields", "prefilter", "_holds")

    def __init__(self, plan: Plan, host: str) -> None:
        self.key = plan.rules
        self.prefilter = plan.prefilter
        candidates = []
        self.always: tuple[ActiveRule, ...] = ()
        for rule in plan.rules:
            client = rule.matcher.client
            if client is not None and not client(host):
                continue
            candidates.append(rule)
            if not rule.matcher.tests:
                self.always = (rule,)
                break  # it takes every request: the rules after it never do
        self.rules = tuple(candidates)
        self.wants_fields = any(rule.matcher.tests for rule in candidates)
        self._holds = tuple(rule.matcher.holds for rule in candidates if rule.matcher.tests)

    def filtered(self, fields: Mapping[str, str]) -> bool:
        """Whether the prefilter tells at once that no rule on fields takes the request."""
        for field, test in self.prefilter:
            value = fields.get(field)
            if value is None or not test(value):
                return True
        return False

    def rejected(self, field: str, value: str) -> bool:
        """Whether ``value`` of ``field`` alone tells that no rule on fields takes a request:
        the prefilter's test on that field fails (for a protocol that has one field cheaper to
        read than the others)."""
        for name, test in self.prefilter:
            if name == field:
                return not test(value)
        return False

    def __call__(self, fields: Mapping[str, str]) -> bool:
        """Whether no rule on fields takes the request whose fields are ``fields``."""
        return self.filtered(fields) or not any(holds(fields) for holds in self._holds)


class Chaos:
    """The rules and the scenario of one proxy: builds each :class:`Plan`, puts it in force
    (``proxy.plan``), answers the picks and counts them per rule and per step.

    The proxy provides ``config``, ``protocol``, ``make_mix(spec, options)``, and the counters a
    scenario reads (``total_sessions``, ``bytes_relayed()``).
    """

    def __init__(self, proxy: Any, loop: Any) -> None:
        self.proxy = proxy
        self._loop = loop
        self._protocol = proxy.protocol
        #: Picks of each rule and of each scenario step (by number, from "1"), since the start.
        self.rule_picks: collections.Counter[str] = collections.Counter()
        self.step_picks: collections.Counter[str] = collections.Counter()
        #: Picks of the scenarios' steps, what a ``req`` step counts.
        self.scenario_picks = 0
        self._bytes = (-math.inf, 0)  # (loop time, bytes relayed) of the last sum

    # -- what is in force ------------------------------------------------------------------

    def start(self, behavior: Mix, rules: Sequence[Rule], scenario: Scenario | None) -> None:
        """Put the configuration's chaos in force (the rules and scenario are resolved)."""
        self.proxy.plan = Plan(behavior, self._activate(rules))
        if scenario is not None:
            self.set_scenario(scenario)

    def set_behavior(self, mix: Mix) -> None:
        """Put ``mix`` in force as the proxy's own mix; a running scenario ends."""
        self.proxy.plan = Plan(mix, self.proxy.plan.rules)

    def replace_behavior(self, mix: Mix) -> None:
        """Put ``mix`` in force as the proxy's own mix; rules and a running scenario stay."""
        self.proxy.plan = dataclasses.replace(self.proxy.plan, behavior=mix)

    def set_rules(self, rules: Sequence[Rule], imports: bool = True) -> None:
        """Put ``rules`` in force, in their order, in place of the rules there were.

        Everything is checked before the swap: the fields against the protocol, the specs
        (with ``imports``, dotted paths are imported; without, only registered names pass), the
        options against their behaviors. Errors are :class:`~vaurien.errors.VaurienError`
        naming the rule.
        """
        active = self._activate(number_rules(list(rules)), imports)
        self.proxy.plan = dataclasses.replace(self.proxy.plan, rules=active)

    def set_scenario(
        self,
        scenario: Scenario,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        imports: bool = True,
    ) -> None:
        """Start ``scenario`` from its first step (a running one ends). ``options`` map behavior
        names to option values that replace the configured ones in every step."""
        behaviors = self._behaviors
        specs = step_specs(scenario, behaviors, imports)
        names = [name for spec in specs for name in spec.names]
        options = checked_options(options or {}, list(dict.fromkeys(names)), behaviors)
        mixes = []
        for number, (step, spec) in enumerate(zip(scenario.steps, specs, strict=True), 1):
            try:
                mixes.append(self.proxy.make_mix(spec, options))
            except VaurienError as e:
                raise SpecError(f"scenario step {number} {step.text!r}: {e}") from None
        running = RunningScenario(scenario, tuple(mixes))
        plan = self.proxy.plan
        position = begin(scenario, self.read)
        self.proxy.plan = plan = Plan(plan.behavior, plan.rules, running, position)
        self._log_step(plan)

    def end_scenario(self) -> None:
        """End the running scenario: the proxy's own mix is back."""
        plan = self.proxy.plan
        if plan.running is not None:
            self.proxy.plan = Plan(plan.behavior, plan.rules)

    @property
    def _behaviors(self) -> Any:
        return self.proxy.config.behaviors

    def _activate(self, rules: Sequence[Rule], imports: bool = True) -> tuple[ActiveRule, ...]:
        active = []
        fields = self._protocol.rule_fields
        for rule in rules:
            matcher = compile_rule(rule, fields, self.proxy.config.protocol)
            spec, options = rule_parts(rule, self._behaviors, imports)
            try:
                mix = self.proxy.make_mix(spec, options)
            except VaurienError as e:  # a plugin that cannot be made with these options
                raise SpecError(f"rule {rule.name!r}: {e}") from None
            active.append(ActiveRule(matcher, mix))
        return tuple(active)

    # -- picks -----------------------------------------------------------------------------

    def view(self, session: Any, plan: Plan) -> SessionRules:
        """The rules of ``plan`` that may take ``session``'s requests (kept on the session)."""
        view = session.rule_view
        if view is None or view.key is not plan.rules:
            view = session.rule_view = SessionRules(plan, session.client_host)
        return view

    def mix_for(self, session: Any, plan: Plan, fields: Mapping[str, str] | None) -> Mix:
        """The mix to pick from for a request of ``session`` whose fields are ``fields`` (None:
        unknown), counted for the rule or the step that supplies it."""
        view = session.rule_view
        if view is None or view.key is not plan.rules:
            view = self.view(session, plan)
        rules = view.rules
        if fields is not None and view.wants_fields and view.filtered(fields):
            rules = view.always  # no rule on the request's fields takes it
        for rule in rules:
            if rule.matcher.holds(fields):
                self.rule_picks[rule.name] += 1
                return rule.mix
        if plan.position is None:
            return plan.mix
        self.scenario_picks += 1
        plan = self.settled(plan)
        self.step_picks[plan.step] += 1
        return plan.mix

    def run_mix(self, session: Any, plan: Plan) -> Mix | None:
        """The mix of the requests of ``session`` that no rule on fields takes, when runs of
        them may be counted without a pick each (:meth:`count_run`): the mix of the rule that
        takes every request of the session, else the scenario's step's or the proxy's; None
        when the step counts picks one by one."""
        view = self.view(session, plan)
        if view.always:
            return view.always[0].mix
        if plan.position is not None:
            plan = self.settled(plan)
            if plan.running.scenario.steps[plan.position.index].measure == PICKS:
                return None
        return plan.mix

    def count_run(self, session: Any, count: int) -> None:
        """Count ``count`` picks of the dummy from the mix :meth:`run_mix` gave."""
        plan = self.proxy.plan
        view = self.view(session, plan)
        if view.always:
            rule = view.always[0]
            self.rule_picks[rule.name] += count
            mix = rule.mix
        else:
            mix = plan.mix
            if plan.position is not None:
                self.scenario_picks += count
                self.step_picks[plan.step] += count
        self.proxy.applied[mix.dummy.name] += count

    # -- the scenario's steps --------------------------------------------------------------

    def read(self, measure: str) -> float:
        """The counter a step of ``measure`` watches, now."""
        if measure == TIME:
            return self._loop.now()
        if measure == PICKS:
            return self.scenario_picks
        if measure == CONNECTIONS:
            return self.proxy.total_sessions
        if measure == BYTES:
            now = self._loop.now()
            when, total = self._bytes
            if now - when >= BYTES_READ_INTERVAL:
                total = self.proxy.bytes_relayed()
                self._bytes = (now, total)
            return total
        raise ValueError(measure)

    def settled(self, plan: Plan) -> Plan:
        """``plan``, or once its step is over, the plan of the step in force now (put in
        force)."""
        running = plan.running
        if running is None or not over(running.scenario, plan.position, self.read):
            return plan
        position = settle(running.scenario, plan.position, self.read)
        plan = Plan(plan.behavior, plan.rules, running, position)
        self.proxy.plan = plan
        self._log_step(plan)
        return plan

    def _log_step(self, plan: Plan) -> None:
        running, position = plan.running, plan.position
        steps = running.scenario.steps
        log.info(
            "%s: scenario step %d of %d%s: %s",
            self.proxy.name,
            position.index + 1,
            len(steps),
            f" (pass {position.loop})" if running.scenario.repeat else "",
            "its last, for good" if position.done else steps[position.index].text,
        )

    # -- what the control API shows --------------------------------------------------------

    def rules(self) -> list[dict[str, Any]]:
        """The rules in force, in order, as ``GET /rules`` shows them."""
        return [
            {
                "name": rule.name,
                "match": rule.matcher.rule.match,
                "behavior": str(rule.mix.spec),
                "options": {
                    name: dict(rule.mix.behaviors[name].settings) for name in rule.mix.spec.names
                },
            }
            for rule in self.proxy.plan.rules
        ]

    def scenario(self) -> dict[str, Any]:
        """The running scenario: the step in force (from 1), what is left of it, the pass."""
        plan = self.settled(self.proxy.plan)
        running, position = plan.running, plan.position
        if running is None:
            return {"scenario": None}
        scenario = running.scenario
        step = scenario.steps[position.index]
        remaining = left(scenario, position, self.read)
        unit = None
        if remaining is not None:
            unit = SHOWN_UNITS[step.measure]
            remaining = round(remaining, 3) if step.measure == TIME else int(remaining)
        return {
            "scenario": str(scenario),
            "step": position.index + 1,
            "steps": len(scenario.steps),
            "behavior": str(step.behavior),
            "left": remaining,
            "unit": unit,
            "loop": position.loop,
            "repeat": scenario.repeat,
            "done": position.done,
        }

    def stats(self) -> dict[str, dict[str, int]]:
        """Picks per rule and per scenario step, for ``GET /stats``."""
        return {"rules": dict(self.rule_picks), "steps": dict(self.step_picks)}


def checked_options(
    options: Mapping[str, Mapping[str, Any]], names: Sequence[str], behaviors: Any
) -> dict[str, dict[str, Any]]:
    """``options`` (behavior name -> option values) checked against the behaviors ``names`` of
    a mix: each behavior must be one of them, each option one of its own, each value right.
    Errors are :class:`SpecError` naming ``BEHAVIOR.OPTION``."""
    checked: dict[str, dict[str, Any]] = {}
    for owner, values in options.items():
        if owner not in names:
            raise SpecError(f"options for {owner!r}, which is not in the mix ({', '.join(names)})")
        table = behaviors.options(owner)
        for key, value in values.items():
            option = table.get(key)
            if option is None:
                known = ", ".join(sorted(table)) or "none"
                raise SpecError(f"{owner}.{key}: unknown option (known: {known})")
            try:
                checked.setdefault(owner, {})[key] = option.check(value)
            except OptionError as e:
                raise SpecError(f"{owner}.{e}") from None
    return checked


def rule_parts(
    rule: Rule, behaviors: Any, imports: bool = True
) -> tuple[BehaviorMix, dict[str, dict[str, Any]]]:
    """The mix of ``rule`` with its names registered in ``behaviors`` (with ``imports``, dotted
    paths are imported), and its options checked; errors name the rule."""
    try:
        spec = read_spec(rule.behavior, behaviors, imports=imports)
        return spec, checked_options(rule.options, spec.names, behaviors)
    except VaurienError as e:
        raise SpecError(f"rule {rule.name!r}: {e}") from None


def step_specs(scenario: Scenario, behaviors: Any, imports: bool = True) -> list[BehaviorMix]:
    """The mix of each step of ``scenario`` with its names registered in ``behaviors``; errors
    name the step."""
    specs = []
    for number, step in enumerate(scenario.steps, 1):
        try:
            specs.append(read_spec(step.behavior, behaviors, imports=imports))
        except VaurienError as e:
            raise SpecError(f"scenario step {number} {step.text!r}: {e}") from None
    return specs
