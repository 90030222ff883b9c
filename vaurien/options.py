"""Plugin options.

A plugin declares its options in the format of the Vaurien documentation::

    options = {"sleep": ("Delay in seconds", float, 1.0),
               "mode": ("What to do", str, "fast", ("fast", "slow"))}

The registry converts that table once into frozen :class:`Option` values. The same values render
the command-line flags, read the INI sections, validate the control API's bodies and write the
docs, so an option is declared in one place only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from vaurien.errors import OptionError, PluginError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a plugin: its name, description, type, default and allowed choices."""

    name: str
    description: str
    type: Callable[[Any], Any]
    default: Any
    choices: tuple[Any, ...] | None = None

    @classmethod
    def from_declaration(cls, name: str, declaration: Any) -> Option:
        """Convert one ``(description, type, default[, choices])`` tuple, checking its shape."""
        if not isinstance(name, str) or not name.isidentifier():
            raise PluginError(f"option name {name!r} is not an identifier")
        if not isinstance(declaration, (tuple, list)) or len(declaration) not in (3, 4):
            raise PluginError(
                f"option {name!r} must be (description, type, default[, choices]), "
                f"got {declaration!r}"
            )
        description, type_, default, *rest = declaration
        if not isinstance(description, str) or not callable(type_):
            raise PluginError(f"option {name!r}: description must be a string and type callable")
        choices = tuple(rest[0]) if rest and rest[0] is not None else None
        option = cls(name, description, type_, default, choices)
        try:
            option.check(default)
        except OptionError as e:
            raise PluginError(f"option {name!r}: its default does not pass its own check: {e}")
        return option

    @property
    def type_name(self) -> str:
        """The type as users read it: ``bool``, ``int``, ``float``, ``str`` ..."""
        return getattr(self.type, "__name__", repr(self.type))

    def parse(self, text: str) -> Any:
        """Convert a value written as text (a flag, an INI value) and check it."""
        if self.type is bool:
            word = text.strip().lower()
            if word in _TRUE:
                return self._in_choices(True)
            if word in _FALSE:
                return self._in_choices(False)
            raise OptionError(self.name, f"{self.name}: expected true or false, got {text!r}")
        try:
            value = self.type(text.strip() if self.type in (int, float) else text)
        except (TypeError, ValueError) as e:
            raise OptionError(
                self.name, f"{self.name}: expected {self.type_name}, got {text!r}"
            ) from e
        if self.type not in (int, float, str):
            return self._in_choices(value)  # a converter's result: checking would convert again
        return self.check(value)

    def check(self, value: Any) -> Any:
        """Check a value given as a Python or JSON value; return it converted to the option's type.

        Strings are parsed as text would be, integers are accepted for floats, and booleans
        are never taken for numbers.
        """
        if isinstance(value, str) and self.type is not str:
            return self.parse(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise OptionError(self.name, f"{self.name}: expected true or false, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise OptionError(self.name, f"{self.name}: expected a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise OptionError(self.name, f"{self.name}: expected a finite number, got {value}")
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise OptionError(self.name, f"{self.name}: expected an integer, got {value!r}")
        elif self.type is str:
            if not isinstance(value, str):
                raise OptionError(self.name, f"{self.name}: expected a string, got {value!r}")
        elif value is not None:
            try:
                value = self.type(value)
            except (TypeError, ValueError) as e:
                raise OptionError(self.name, f"{self.name}: {e}") from e
        return self._in_choices(value)

    def _in_choices(self, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(str(c) for c in self.choices)
            raise OptionError(self.name, f"{self.name}: {value!r} is not one of {allowed}")
        return value


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
