"""Imports run one way: every module of the package sits in a layer, and imports only from its
own layer or the layers below (every import counts, those inside functions and for type
checking too). A new module must be given a layer here."""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vaurien"

#: Bottom to top. A name is a module; a pattern (``*``) places the modules it matches that are
#: not named elsewhere.
LAYERS: list[tuple[str, ...]] = [
    ("vaurien", "vaurien.errors", "vaurien.contract"),
    ("vaurien.options",),
    ("vaurien.network", "vaurien.workers"),
    ("vaurien.registry",),
    ("vaurien.endpoint",),
    ("vaurien.memory_endpoint",),
    ("vaurien.chain",),
    ("vaurien.mix",),
    ("vaurien.rules", "vaurien.scenario", "vaurien.plan"),  # what picks from which mix
    ("vaurien.behaviors.base", "vaurien.protocols.base", "vaurien.handlers.base"),
    ("vaurien.behaviors.adapter",),
    ("vaurien.behaviors", "vaurien.protocols"),  # the registries
    ("vaurien.behaviors.*", "vaurien.protocols.*"),  # the built-in plugins
    ("vaurien.handlers",),  # Vaurien 1.x handlers, registered as behaviors
    ("vaurien.settings",),
    ("vaurien.proxy_config",),
    ("vaurien.config",),
    ("vaurien.tls",),
    ("vaurien.session",),
    ("vaurien.toxics",),
    ("vaurien.proxy",),
    ("vaurien.server",),
    ("vaurien.http_service",),
    ("vaurien.metrics",),
    ("vaurien.dashboard",),
    ("vaurien.api",),
    ("vaurien.toxiproxy_proxies",),
    ("vaurien.toxiproxy_api",),
    ("vaurien.serving",),
    ("vaurien.demo",),
    ("vaurien.cli",),
    ("vaurien.__main__", "vaurien.client", "vaurien.ctl", "vaurien.util", "vaurien.pytest_plugin"),
]

#: Imports that break a rule below, by name, each until the work that removes it lands.
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(name: str) -> set[str]:
    """The package's modules that ``name`` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:  # from vaurien import config: the module vaurien.config
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
    return {module for module in found if module in MODULES}


def layer_of(name: str) -> int:
    named = [index for index, layer in enumerate(LAYERS) if name in layer]
    if not named:
        named = [
            index
            for index, layer in enumerate(LAYERS)
            if any("*" in pattern and fnmatch.fnmatchcase(name, pattern) for pattern in layer)
        ]
    assert len(named) == 1, f"{name} must sit in exactly one layer of LAYERS, not {named}"
    return named[0]


def test_every_name_in_the_layers_is_a_module():
    for layer in LAYERS:
        for name in layer:
            assert "*" in name or name in MODULES, f"{name} is in LAYERS but is no module"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_module_imports_only_from_its_layer_or_below(name):
    own = layer_of(name)
    above = sorted(module for module in imports(name) if layer_of(module) > own)
    assert not above, f"{name} (layer {own}) imports from higher layers: {above}"


def test_the_layering_is_not_empty_of_meaning():
    assert imports("vaurien.proxy") >= {"vaurien.session", "vaurien.mix", "vaurien.network"}
    assert layer_of("vaurien.protocols.redis") > layer_of("vaurien.protocols")
    with pytest.raises(AssertionError, match="exactly one layer"):
        layer_of("vaurien.somewhere_new")


@pytest.mark.parametrize(
    "lower, upper",
    [
        ("vaurien.protocols", "vaurien.behaviors"),  # protocols know behaviors by the contract
        ("vaurien.behaviors", "vaurien.protocols"),  # and behaviors know protocols the same way
        ("vaurien.behaviors", "vaurien.handlers"),
    ],
)
def test_plugin_families_do_not_import_each_other(lower, upper):
    for name in MODULES:
        if name == lower or name.startswith(lower + "."):
            for module in imports(name):
                if module == upper or module.startswith(upper + "."):
                    assert (name, module) in KNOWN_EXCEPTIONS, f"{name} imports {module}"


def test_the_architecture_page_lists_the_layers_as_they_are():
    page = (PACKAGE.parent / "docs" / "architecture.rst").read_text(encoding="utf-8")
    listed = []
    for line in page.splitlines():
        number, dot, rest = line.strip().partition(". ")
        if dot and number.isdigit():
            listed.append(tuple(name.strip() for name in rest.split("(")[0].split(",")))
    assert listed == LAYERS
