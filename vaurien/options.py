"""Options: the knobs of plugins, and of the proxy itself.

A plugin declares its options in the format of the Vaurien documentation, and may bound a
number with a range after the default (or after the choices)::

    options = {"sleep": ("Delay in seconds", float, 1.0, at_least(0)),
               "odds": ("Chance of a hit", float, 0.1, between(0, 1)),
               "mode": ("What to do", str, "fast", ("fast", "slow"))}

The registry converts that table once into frozen :class:`Option` values. The same values render
the command-line flags, read the INI sections, validate the control API's bodies and write the
docs, so an option is declared in one place only. The proxy's global settings are options too
(:mod:`vaurien.settings`), read by the same code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from vaurien.errors import OptionError, PluginError, VaurienError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclasses.dataclass(frozen=True)
class Range:
    """The numbers an option accepts: from ``minimum`` to ``maximum`` (``None`` leaves a side
    open); with ``above_minimum`` the minimum itself is refused. Write it with
    :func:`at_least` or :func:`between` in an option table."""

    minimum: float | None = None
    maximum: float | None = None
    above_minimum: bool = False

    def refuses(self, value: Any) -> str | None:
        """What ``value`` breaks, as in "expected a number of at least 0"; None if it fits."""
        if self.minimum is not None:
            if self.above_minimum and not value > self.minimum:
                return f"above {self.minimum:g}"
            if not value >= self.minimum:
                return f"of at least {self.minimum:g}"
        if self.maximum is not None and not value <= self.maximum:
            return f"of at most {self.maximum:g}"
        return None

    def __str__(self) -> str:
        """The range as users read it: ``at least 0``, ``0 to 1``, ``above 0, at most 1``."""
        low = f"{self.minimum:g}" if self.minimum is not None else None
        high = f"{self.maximum:g}" if self.maximum is not None else None
        if self.above_minimum:
            return ", ".join(
                part
                for part in (low and f"above {low}", high and f"at most {high}")
                if part is not None
            )
        if low is not None and high is not None:
            return f"{low} to {high}"
        return f"at least {low}" if low is not None else f"at most {high}"


def at_least(minimum: float) -> Range:
    """The range of numbers from ``minimum`` up: ``("Delay", float, 1.0, at_least(0))``."""
    return Range(minimum=minimum)


def between(minimum: float, maximum: float) -> Range:
    """The range of numbers from ``minimum`` to ``maximum``, both included."""
    return Range(minimum=minimum, maximum=maximum)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its name, description, type, default, and the values it accepts (``choices``
    and a numeric ``range``).

    ``type`` is ``bool``, ``int``, ``float``, ``str`` or any other callable that converts text
    (a flag, an INI value, a JSON string) into a value: it raises ``ValueError``, or a
    :class:`~vaurien.errors.VaurienError` whose message says what is wrong. A value of such a
    type given as anything but text is taken as already converted.
    """

    name: str
    description: str
    type: Callable[[Any], Any]
    default: Any
    choices: tuple[Any, ...] | None = None
    range: Range | None = None

    @classmethod
    def from_declaration(cls, name: str, declaration: Any) -> Option:
        """Convert one ``(description, type, default[, choices][, range])`` tuple, checking its
        shape: the choices are a sequence (or None), the range a :class:`Range`."""
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"option name {name!r} is not an identifier")
        if not isinstance(declaration, (tuple, list)) or not 3 <= len(declaration) <= 5:
            raise PluginError(
                f"option {name!r} must be (description, type, default[, choices][, range]), "
                f"got {declaration!r}"
            )
        description, type_, default, *rest = declaration
        if not isinstance(description, str) or not callable(type_):
            raise PluginError(f"option {name!r}: description must be a string and type callable")
        range_ = rest.pop() if rest and isinstance(rest[-1], Range) else None
        if len(rest) > 1 or any(isinstance(extra, (str, Range)) for extra in rest):
            raise PluginError(
                f"option {name!r}: after the default come the choices (a sequence or None) "
                f"and a range (at_least(...) or between(...)), got {tuple(rest)!r}"
            )
        choices = tuple(rest[0]) if rest and rest[0] is not None else None
        option = cls(name, description, type_, default, choices, range_)
        try:
            option.check(default)
        except OptionError as e:
            raise PluginError(f"option {name!r}: its default does not pass its own check: {e}")
        return option

    @property
    def type_name(self) -> str:
        """The type as users read it: ``bool``, ``int``, ``float``, ``str`` ..."""
        return getattr(self.type, "__name__", repr(self.type))

    @property
    def accepts(self) -> str | None:
        """The values accepted beyond the type, for help texts: ``one of a, b``, ``at least 0``."""
        parts = []
        if self.choices is not None:
            parts.append("one of " + ", ".join(str(choice) for choice in self.choices))
        if self.range is not None:
            parts.append(str(self.range))
        return "; ".join(parts) or None

    def to_json(self, default: Any = None) -> dict[str, Any]:
        """What the control API shows of the option (``GET /behaviors``), so that a form can
        be built from it: ``description``, ``type`` (:attr:`type_name`), ``default`` (the
        option's, or ``default`` when given: the value in force where it is not set),
        ``choices``, and ``minimum``, ``maximum`` and ``above_minimum`` for a range; those
        last four only when the option has them."""
        shown: dict[str, Any] = {
            "description": self.description,
            "type": self.type_name,
            "default": self.default if default is None else default,
        }
        if self.choices is not None:
            shown["choices"] = list(self.choices)
        if self.range is not None:
            for key in ("minimum", "maximum"):
                if getattr(self.range, key) is not None:
                    shown[key] = getattr(self.range, key)
            if self.range.above_minimum:
                shown["above_minimum"] = True
        return shown

    def parse(self, text: str) -> Any:
        """Convert a value written as text (a flag, an INI value) and check it."""
        if self.type is bool:
            word = text.strip().lower()
            if word in _TRUE:
                return self._accept(True)
            if word in _FALSE:
                return self._accept(False)
            raise self._error(f"expected true or false, got {text!r}")
        if self.type is str:
            return self._accept(text)
        try:
            value = self.type(text.strip() if self.type in (int, float) else text)
        except VaurienError as e:
            raise self._error(str(e)) from None
        except (TypeError, ValueError) as e:
            raise self._error(f"expected {self.type_name}, got {text!r}") from e
        if self.type is float and not math.isfinite(value):
            raise self._error(f"expected a finite number, got {text!r}")
        return self._accept(value)

    def check(self, value: Any) -> Any:
        """Check a value given as a Python or JSON value; return it converted to the option's type.

        Strings are parsed as text would be, integers are accepted for floats, and booleans
        are never taken for numbers.
        """
        if isinstance(value, str) and self.type is not str:
            return self.parse(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise self._error(f"expected true or false, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self._error(f"expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise self._error(f"expected a finite number, got {value}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self._error(f"expected an integer, got {value!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise self._error(f"expected a string, got {value!r}")
        return self._accept(value)

    def _accept(self, value: Any) -> Any:
        if self.range is not None and value is not None:
            refused = self.range.refuses(value)
            if refused is not None:
                # The declared type says it, else the default's (a converter's result).
                sample = value if self.default is None else self.default
                whole = self.type is int or (self.type is not float and isinstance(sample, int))
                kind = "a whole number" if whole else "a number"
                raise self._error(f"expected {kind} {refused}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise self._error(f"{value!r} is not one of {allowed}")
        return value

    def _error(self, problem: str) -> OptionError:
        return OptionError(self.name, f"{self.name}: {problem}", problem)


def convert_table(owner: str, table: Mapping[str, Any] | None) -> dict[str, Option]:
    """Convert a plugin's ``options`` into ``{name: Option}``; ``owner`` names it in errors."""
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise PluginError(f"{owner}: options must be a mapping, got {type(table).__name__}")
    try:
        return {name: Option.from_declaration(name, decl) for name, decl in table.items()}
    except PluginError as e:
        raise PluginError(f"{owner}: {e}") from None


def resolve_values(options: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option's value: its default, replaced by the checked value in ``given`` if any."""
    unknown = sorted(set(given) - set(options))
    if unknown:
        known = ", ".join(sorted(options)) or "none"
        raise OptionError(unknown[0], f"unknown option {unknown[0]!r} (known: {known})")
    values = {name: option.default for name, option in options.items()}
    for name, value in given.items():
        values[name] = options[name].check(value)
    return values
