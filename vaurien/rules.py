"""Rules: which requests get which behavior mix.

A rule is a match expression and a behavior mix, written ``MATCH => SPEC``::

    method=POST path=/api/payments/* => 50:error

The match expression is space-separated ``FIELD=PATTERN`` terms, all of which must hold (quote a
pattern that holds a space: ``sql="INSERT INTO orders*"``; a backslash is kept as written). A
pattern is a glob (``*``, ``?``, ``[abc]``) with ``,`` between alternatives
(``method=PUT,POST``), or ``~`` and a regular expression searched in the value
(``path=~^/v[12]/``). Field names are case-insensitive; values are compared as the protocol
declares (a command's name without regard to case, a path as it is).
``client`` (every protocol has it) takes addresses and networks: ``client=10.0.0.0/8,::1``.

After the spec, ``BEHAVIOR.OPTION=VALUE`` words set options of the rule's behaviors for the
requests it takes: ``path=/slow/* => 100:delay delay.sleep=3``. A rule may start with its name
and a colon (``payments: method=POST => 50:error``); it is named ``rule1``, ``rule2`` ... by
its place otherwise.

A protocol declares the fields it can match (``rule_fields``, :class:`Field` values) and says
what a request holds (its ``peek``, or what its session passes to the pick). Parsing is pure
(:meth:`Rule.parse`); :func:`compile_rule` checks a rule against a protocol's fields and makes the
:class:`Matcher` that tests requests.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re
import shlex
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vaurien.errors import SpecError
from vaurien.mix import BehaviorMix

#: The field every protocol has: the client's address.
CLIENT = "client"

#: What a request without fields holds (a protocol that knows none).
NO_FIELDS: Mapping[str, str] = types.MappingProxyType({})

_FIELD_NAME = re.compile(r"[a-z0-9_][a-z0-9_.-]*")
_RULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_OPTION_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)")
_GLOB = frozenset("*?[")
# What may come before a statement's first keyword: blanks, comments, parentheses.
_LEADING = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|#[^\n]*(?:\n|$)|\(|/\*(?:[^*]|\*(?!/))*(?:\*/|$))*")
_KEYWORD = re.compile(r"[A-Za-z_]+")


def statement_type(sql: str) -> str:
    """The first keyword of ``sql``, upper-cased (``SELECT``, ``INSERT``, ``WITH`` ...), past
    blanks, comments and opening parentheses; ``""`` when there is none. The ``statement`` field
    of the SQL protocols."""
    match = _KEYWORD.match(sql, _LEADING.match(sql).end())
    return match.group().upper() if match else ""


@dataclasses.dataclass(frozen=True)
class Field:
    """A request field rules can match, as a protocol declares it: what it holds, and whether
    its values compare without regard to case (a command's name, an HTTP method)."""

    description: str
    ignore_case: bool = False


CLIENT_FIELD = Field(
    "The client's IP address; a pattern lists addresses and networks (``127.0.0.1``, "
    "``10.0.0.0/8``, ``::1``), or is ``~`` and a regular expression on the address"
)


def declared_field(name: str, declared: Mapping[str, Field]) -> Field | None:
    """The declaration of field ``name`` among ``declared`` (``client`` always is one). A
    declared name ending in ``.NAME`` stands for a family: ``header.NAME`` declares
    ``header.host``, ``header.x-request-id`` ..."""
    if name == CLIENT:
        return CLIENT_FIELD
    field = declared.get(name)
    if field is None:
        family, dot, member = name.partition(".")
        if dot and member:
            field = declared.get(f"{family}.NAME")
    return field


@dataclasses.dataclass(frozen=True)
class Term:
    """One ``FIELD=PATTERN`` of a match expression: ``field`` lowercase, ``pattern`` as written."""

    field: str
    pattern: str


@dataclasses.dataclass(frozen=True)
class Rule:
    """One rule, parsed: its ``name``, its ``terms`` (all must hold), the behavior mix of the
    requests it takes, and ``options``: option values of that mix's behaviors
    (``{"delay": {"sleep": 3}}``, values as text or as their type), which replace the
    proxy's for those requests."""

    name: str
    match: str
    terms: tuple[Term, ...]
    behavior: BehaviorMix
    options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, name: str | None = None) -> Rule:
        """Parse ``[NAME:] MATCH => SPEC [BEHAVIOR.OPTION=VALUE ...]`` (the ``--rule`` form);
        ``name`` is used when the text names none. Errors are :class:`SpecError` naming the
        rule and what is wrong."""
        if not isinstance(text, str) or not text.strip():
            raise SpecError("empty rule: expected MATCH => SPEC")
        match, arrow, rest = text.partition("=>")
        first, _, after = match.strip().partition(" ")
        if first.endswith(":") and "=" not in first:
            name, match = first[:-1], after
        label = f"rule {name!r}" if name else f"rule {text.strip()!r}"
        if not arrow:
            raise SpecError(f"{label}: missing '=>' between the match and the behavior spec")
        try:
            words = split_words(rest)
        except ValueError as e:
            raise SpecError(f"{label}: {e} in {rest.strip()!r}") from None
        spec = [word for word in words if "=" not in word]
        options: dict[str, dict[str, str]] = {}
        for word in words:
            if "=" in word:
                key, _, value = word.partition("=")
                behavior, option = _option_key(key, label)
                options.setdefault(behavior, {})[option] = value
        if not spec:
            raise SpecError(f"{label}: missing the behavior spec after '=>'")
        return cls.create(name or "", match, "".join(spec), options)

    @classmethod
    def create(
        cls,
        name: str,
        match: str,
        behavior: str | BehaviorMix,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Rule:
        """A rule from its parts, as a config section or the control API gives them; without a
        ``name`` (``""``), :func:`number_rules` names it by its place."""
        if not isinstance(name, str) or (name and not _RULE_NAME.fullmatch(name)):
            raise SpecError(
                f"rule name {name!r}: use letters, digits and _ . - (it names the rule in stats)"
            )
        if not isinstance(match, str):
            raise SpecError(f"rule {name!r}: the match must be a string, got {match!r}")
        label = f"rule {name!r}" if name else f"rule {match.strip()!r}"
        terms = parse_match(match, label)
        try:
            if isinstance(behavior, str):
                behavior = spec_or_name(behavior)
            if not isinstance(behavior, BehaviorMix):
                raise SpecError(f"the behavior must be a spec such as 50:error, got {behavior!r}")
        except SpecError as e:
            raise SpecError(f"{label}: {e}") from None
        checked: dict[str, dict[str, Any]] = {}
        if options is not None and not isinstance(options, Mapping):
            raise SpecError(f"{label}: options must map behavior names to their options")
        for owner, values in (options or {}).items():
            if not isinstance(values, Mapping):
                raise SpecError(f"{label}: the options of {owner!r} must be a mapping")
            checked[str(owner)] = dict(values)
        return cls(name, match.strip(), terms, behavior, checked)

    def named(self, name: str) -> Rule:
        """The same rule under another name (a rule of the command line gets its place's)."""
        return dataclasses.replace(self, name=name)

    def __str__(self) -> str:
        options = " ".join(
            f"{owner}.{key}={shlex.quote(str(value))}"
            for owner, values in self.options.items()
            for key, value in values.items()
        )
        return f"{self.name}: {self.match} => {self.behavior}" + (f" {options}" if options else "")


def spec_or_name(text: str) -> BehaviorMix:
    """A behavior spec, or a lone behavior name (every request to it)."""
    text = text.strip()
    if text and ":" not in text and "," not in text:
        return BehaviorMix.single(text)
    return BehaviorMix.parse(text)


def _option_key(key: str, label: str) -> tuple[str, str]:
    found = _OPTION_KEY.fullmatch(key.strip())
    if found is None:
        raise SpecError(f"{label}: {key!r}: a rule's option is written BEHAVIOR.OPTION=VALUE")
    return found[1], found[2]


def option_key(key: str, label: str) -> tuple[str, str] | None:
    """``(behavior, option)`` for a ``BEHAVIOR.OPTION`` key of a config section, else None."""
    return _option_key(key, label) if "." in key else None


def split_words(text: str) -> list[str]:
    """The words of ``text``, split at blanks; quotes (``'`` or ``"``) group a word holding a
    blank, as a shell's would. A backslash is kept as it is, so a regular expression reads as
    written (``path=~^/v\\d+/``). Raises :class:`ValueError` for a quote left open."""
    lexer = shlex.shlex(text, posix=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    lexer.escape = ""
    return list(lexer)


def parse_match(text: str, label: str = "rule") -> tuple[Term, ...]:
    """The terms of a match expression; ``label`` names the rule in errors. Regular
    expressions and client addresses are checked here; field names against a protocol by
    :func:`compile_rule`."""
    try:
        words = split_words(text)
    except ValueError as e:
        raise SpecError(f"{label}: {e} in the match {text!r}") from None
    if not words:
        raise SpecError(f"{label}: empty match: expected FIELD=PATTERN terms")
    terms = []
    for word in words:
        name, equals, pattern = word.partition("=")
        name = name.strip().lower()
        if not equals or not _FIELD_NAME.fullmatch(name):
            raise SpecError(f"{label}: {word!r}: expected FIELD=PATTERN")
        if not pattern:
            raise SpecError(f"{label}: {name}: empty pattern")
        term = Term(name, pattern)
        _test(term, Field(""), label)  # every problem of the pattern itself, now
        terms.append(term)
    return tuple(terms)


def _test(term: Term, field: Field, label: str) -> Callable[[str], Any]:
    """The function that tells whether a value matches ``term``'s pattern."""
    pattern = term.pattern
    flags = re.IGNORECASE if field.ignore_case else 0
    if pattern.startswith("~"):
        try:
            return re.compile(pattern[1:], flags).search
        except re.error as e:
            raise SpecError(
                f"{label}: {term.field}: bad regular expression {pattern[1:]!r}: {e}"
            ) from None
    alternatives = pattern.split(",")
    if not all(alternatives):
        raise SpecError(f"{label}: {term.field}: empty alternative in {pattern!r}")
    if term.field == CLIENT:
        return _client_test(alternatives, label)
    try:
        return _glob_test(alternatives, field.ignore_case)
    except re.error as e:  # a character class fnmatch passes on as it is
        raise SpecError(f"{label}: {term.field}: bad pattern {pattern!r}: {e}") from None


def _glob_test(alternatives: Sequence[str], ignore_case: bool) -> Callable[[str], Any]:
    """The test of a value against globs: a set lookup when none has a wildcard."""
    alternatives = list(dict.fromkeys(alternatives))
    if not any(_GLOB & set(alternative) for alternative in alternatives):
        if ignore_case:
            lowered = frozenset(alternative.lower() for alternative in alternatives)
            return lambda value: value.lower() in lowered
        return frozenset(alternatives).__contains__
    regex = "|".join(fnmatch.translate(alternative) for alternative in alternatives)
    return re.compile(regex, re.IGNORECASE if ignore_case else 0).match


def _client_test(alternatives: list[str], label: str) -> Callable[[str], bool]:
    networks = []
    for alternative in alternatives:
        try:
            networks.append(ipaddress.ip_network(alternative.strip(), strict=False))
        except ValueError:
            raise SpecError(
                f"{label}: client: {alternative!r} is not an IP address or network"
            ) from None

    def test(host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # a dual-stack socket's IPv4 client
        return any(
            address in network or (mapped is not None and mapped in network) for network in networks
        )

    return test


@dataclasses.dataclass(frozen=True, eq=False)
class Matcher:
    """A rule compiled for one protocol: ``client`` tests the client's address (None: any
    client), ``tests`` the request's other fields, ``(field, test)`` each. ``globs`` holds, by
    field, the alternatives of the field's first glob term, whether its case is ignored, and
    the field's place among those the protocol declares (what :func:`prefilter` joins and
    sorts)."""

    rule: Rule
    client: Callable[[str], Any] | None
    tests: tuple[tuple[str, Callable[[str], Any]], ...]
    globs: Mapping[str, tuple[tuple[str, ...], bool, int]] = dataclasses.field(default_factory=dict)

    def holds(self, fields: Mapping[str, str] | None) -> bool:
        """Whether the request whose fields are ``fields`` matches (its client aside). A
        request whose fields are unknown (None) matches only a rule on the client alone."""
        if fields is None:
            return not self.tests
        for field, test in self.tests:
            value = fields.get(field)
            if value is None or not test(value):
                return False
        return True


def compile_rule(rule: Rule, declared: Mapping[str, Field], protocol: str) -> Matcher:
    """Check ``rule`` against the fields a protocol declares and compile its tests; an unknown
    field is a :class:`SpecError` naming the rule, the field and the fields known."""
    label = f"rule {rule.name!r}"
    client = None
    tests = []
    globs: dict[str, tuple[tuple[str, ...], bool, int]] = {}
    places = {name: place for place, name in enumerate(declared)}
    for term in rule.terms:
        field = declared_field(term.field, declared)
        if field is None:
            known = ", ".join(sorted({CLIENT, *declared}))
            raise SpecError(
                f"{label}: unknown field {term.field!r} for the {protocol} protocol "
                f"(known: {known})"
            )
        test = _test(term, field, label)
        if term.field == CLIENT:
            previous = client
            client = test if previous is None else _both(previous, test)
        else:
            tests.append((term.field, test))
            if not term.pattern.startswith("~") and term.field not in globs:
                place = places.get(term.field, places.get(f"{term.field.partition('.')[0]}.NAME"))
                globs[term.field] = (tuple(term.pattern.split(",")), field.ignore_case, place or 0)
    return Matcher(rule, client, tuple(tests), globs)


def prefilter(matchers: Sequence[Matcher]) -> tuple[tuple[str, Callable[[str], Any]], ...]:
    """Tests that a request must pass for any of ``matchers`` that test its fields to take it:
    ``(field, test)`` for each field every one of them tests with a glob, their globs joined in
    one regular expression, in the order the protocol declares its fields (the cheapest to
    find first). Empty when they have no such field in common, or are too few for it to pay.

    With ten rules on POST requests to paths, a GET, or a request to none of those paths, is
    told so by one regular expression instead of ten rules tried in turn.
    """
    testing = [matcher for matcher in matchers if matcher.tests]
    if len(testing) < 2:
        return ()
    common = set(testing[0].globs).intersection(*(matcher.globs for matcher in testing[1:]))
    tests = []
    for field in sorted(common, key=lambda field: (testing[0].globs[field][2], field)):
        cases = {matcher.globs[field][1] for matcher in testing}
        if len(cases) == 1:
            alternatives = [each for matcher in testing for each in matcher.globs[field][0]]
            tests.append((field, _glob_test(alternatives, cases.pop())))
    return tuple(tests)


def _both(first: Callable[[str], Any], second: Callable[[str], Any]) -> Callable[[str], bool]:
    return lambda value: bool(first(value) and second(value))


def number_rules(rules: list[Rule]) -> tuple[Rule, ...]:
    """Rules in order, each without a name named ``ruleN`` by its place; names must differ."""
    named = []
    for place, rule in enumerate(rules, 1):
        named.append(rule if rule.name else rule.named(f"rule{place}"))
    seen: set[str] = set()
    for rule in named:
        if rule.name in seen:
            raise SpecError(f"rule {rule.name!r}: two rules have this name")
        seen.add(rule.name)
    return tuple(named)
