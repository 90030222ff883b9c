"""The plugin registry, one implementation for behaviors and protocols.

A registry maps names to plugin *classes*. Each proxy takes a copy of the global registry, adds the
plugins its own configuration names (dotted paths, ``callable =`` entries) to that copy, and builds
its own instances, so two proxies in one process never share a plugin's state.
"""

from __future__ import annotations

import importlib.metadata
import logging
import pkgutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from vaurien.errors import PluginError, VaurienError
from vaurien.options import Option, convert_table, resolve_values

log = logging.getLogger(__name__)

T = TypeVar("T", bound=type)


class Registry:
    """Plugin classes of one kind (``behavior`` or ``protocol``) by name.

    ``adapt`` may turn a class of an older plugin API into one of this kind (the 1.x handlers);
    ``check`` validates a class's shape when it is registered; ``entry_point_group`` names the
    ``importlib.metadata`` group that installed packages use to add plugins. ``common_options``
    (an option table in the plugins' own format) is added to every plugin's table, so an option
    every plugin of the kind has (the behaviors' ``direction``) is declared once; a plugin may
    not declare one of these itself.
    """

    def __init__(
        self,
        kind: str,
        *,
        adapt: Callable[[type], type] | None = None,
        check: Callable[[type], None] | None = None,
        entry_point_group: str | None = None,
        common_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self._adapt = adapt
        self._check = check
        self._common_options = dict(common_options or {})
        self._entry_point_group = entry_point_group
        self._entry_points_loaded = entry_point_group is None
        self._classes: dict[str, type] = {}
        self._options: dict[str, dict[str, Option]] = {}

    def register(self, cls: T | None = None, *, name: str | None = None) -> Any:
        """Register ``cls`` under ``name`` (default ``cls.name``) and return it.

        Works as a plain call (``Behavior.register(MyBehavior)``) and as a class decorator.
        Registering the same class twice under a name is harmless; another class under a taken
        name is an error naming both.
        """
        if cls is None:
            return lambda c: self.register(c, name=name)
        if not isinstance(cls, type):
            raise PluginError(f"a {self.kind} must be a class, got {cls!r}")
        declared = cls
        if self._adapt is not None:
            cls = self._adapt(cls)
        name = name if name is not None else getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise PluginError(f"{_qualname(cls)} has no 'name' to register it under")
        if any(ch in name for ch in ",:= \t") or name.startswith("-"):
            raise PluginError(f"{self.kind} name {name!r} may not contain ',', ':', '=' or spaces")
        current = self._classes.get(name)
        if current is cls:
            return declared
        if current is not None:
            raise PluginError(
                f"{self.kind} name {name!r} is taken by {_qualname(current)}; "
                f"cannot register {_qualname(cls)} under it"
            )
        if self._check is not None:
            self._check(cls)
        self._options[name] = self._option_table(name, cls)
        self._classes[name] = cls
        return declared

    def get(self, name: str) -> type:
        """The class registered under ``name``; an unknown name lists the known ones."""
        self._load_entry_points()
        try:
            return self._classes[name]
        except KeyError:
            raise PluginError(
                f"unknown {self.kind} {name!r} (known: {', '.join(self.names())})"
            ) from None

    def resolve(self, reference: str) -> str:
        """The registered name for ``reference``: a name, or a dotted path to import.

        ``pkg.mod.Class`` and ``pkg.mod:Class`` are imported and registered under the class's
        ``name``; the result is that name.
        """
        self._load_entry_points()
        if reference in self._classes:
            return reference
        if "." not in reference and ":" not in reference:
            self.get(reference)  # raises the "unknown ... (known: ...)" error
        cls = self.import_class(reference)
        self.register(cls)
        return cls.name

    def import_class(self, path: str) -> type:
        """Import the class a dotted path names, with one clear error when that fails."""
        try:
            obj = pkgutil.resolve_name(path)
        except (ImportError, AttributeError, ValueError) as e:
            raise PluginError(f"cannot import {self.kind} {path!r}: {e}") from e
        except Exception as e:  # the plugin module itself failed while importing
            raise PluginError(f"cannot import {self.kind} {path!r}: {type(e).__name__}: {e}") from e
        if not isinstance(obj, type):
            raise PluginError(f"{path!r} is not a class but {type(obj).__name__}")
        return obj

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load_entry_points()
        return sorted(self._classes)

    def builtin_names(self) -> list[str]:
        """The registered names of the plugins Vaurien itself ships, sorted.

        Those are the classes defined in the ``vaurien`` package, as opposed to plugins
        registered by the user, by a test or by an installed package.
        """
        return [
            name
            for name in self.names()
            if self._classes[name].__module__.partition(".")[0] == "vaurien"
        ]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def options(self, name: str) -> dict[str, Option]:
        """The converted option table of the plugin registered under ``name``."""
        self.get(name)
        return self._options[name]

    def create(self, name: str, values: Mapping[str, Any] | None = None, proxy: Any = None) -> Any:
        """A new instance of plugin ``name`` with its options resolved from ``values``.

        The instance gets ``settings`` (every option's value), ``proxy`` and, when its class does
        not provide one, an ``option(name)`` lookup: the attributes the Vaurien docs promise.
        """
        cls = self.get(name)
        settings = resolve_values(self._options[name], values or {})
        try:
            instance = cls()
        except VaurienError:
            raise  # the plugin said what is wrong (a missing extra): its line is the message
        except Exception as e:
            raise PluginError(f"cannot create {self.kind} {name!r}: {type(e).__name__}: {e}") from e
        instance.name = name
        instance.settings = settings
        instance.proxy = proxy
        if not callable(getattr(instance, "option", None)):
            instance.option = settings.__getitem__
        return instance

    def copy(self, names: Iterable[str] | None = None) -> Registry:
        """An independent registry with the same classes, for one proxy to extend.

        With ``names``, only those plugins are copied (``copy(builtin_names())`` for the docs).
        """
        self._load_entry_points()
        other = Registry(
            self.kind, adapt=self._adapt, check=self._check, common_options=self._common_options
        )
        kept = self._classes if names is None else {name: self.get(name) for name in names}
        other._classes = dict(kept)
        other._options = {name: self._options[name] for name in kept}
        return other

    def _option_table(self, name: str, cls: type) -> dict[str, Option]:
        owner = f"{self.kind} {name!r}"
        table = getattr(cls, "options", None) or {}
        if isinstance(table, Mapping):
            for option in self._common_options:
                if option in table:
                    raise PluginError(
                        f"{owner}: option {option!r} is common to every {self.kind} "
                        f"and may not be declared again"
                    )
            table = {**table, **self._common_options}
        return convert_table(owner, table)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for entry_point in importlib.metadata.entry_points(group=self._entry_point_group):
            try:
                cls = entry_point.load()
                self.register(cls, name=entry_point.name)
            except Exception as e:  # one broken package must not break the others
                log.warning(
                    "cannot load %s plugin %r from entry point %s: %s",
                    self.kind,
                    entry_point.name,
                    entry_point.value,
                    e,
                )


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
