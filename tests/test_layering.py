"""The import layering of docs/DESIGN.md ("Layering"), checked on the source's imports (ast; lazy
imports inside functions count too, except where a rule says top level)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edgecl", "models", "firmware_export")
# The bottom of edgecl: readable by every layer, importing (at module level) nothing above it.
BOTTOM = ("edgecl.errors", "edgecl.limits", "edgecl.options", "edgecl.targets")
COMMAND_LINE = ("edgecl.commands", "edgecl.cli", "edgecl.__main__")
# The edgecl modules that drive a device export.
EXPORT_DRIVERS = COMMAND_LINE + ("edgecl.trainer", "edgecl.training")
# The one device rule read before a run starts: the data check refuses a TFLM window the model
# cannot take (docs/DESIGN.md, Layering).
DEVICE_RULES_READ = {"edgecl.data.validate": ("firmware_export.device.windows",)}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(imported module, line) of every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            # `from edgecl import commands` names a module too
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield _module_name(path), path


def _violations(rule) -> list[str]:
    out = []
    for module, path in _sources():
        for imported, line in _imports(path, top_level_only=rule.get("top_level_only", False)):
            if rule["applies"](module) and rule["forbidden"](module, imported):
                out.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    return out


RULES = {
    "only the command line imports edgecl.commands and edgecl.cli": dict(
        applies=lambda m: not _within(m, COMMAND_LINE),
        forbidden=lambda m, i: _within(i, ("edgecl.commands", "edgecl.cli"))),
    "edgecl imports firmware_export only where it drives an export": dict(
        applies=lambda m: _within(m, ("edgecl",)) and not _within(m, EXPORT_DRIVERS),
        forbidden=lambda m, i: _within(i, ("firmware_export",))
        and not _within(i, DEVICE_RULES_READ.get(m, ()))),
    "models and firmware_export import no runner of edgecl (trainer, grid, report)": dict(
        applies=lambda m: _within(m, ("models", "firmware_export")),
        forbidden=lambda m, i: _within(i, ("edgecl.trainer", "edgecl.training", "edgecl.grid",
                                        "edgecl.report"))),
    "models imports no firmware_export": dict(
        applies=lambda m: _within(m, ("models",)),
        forbidden=lambda m, i: _within(i, ("firmware_export",))),
    "the bottom of edgecl imports nothing above it at module level": dict(
        applies=lambda m: _within(m, BOTTOM), top_level_only=True,
        forbidden=lambda m, i: _within(i, PACKAGES) and not _within(i, BOTTOM)
        and i != "edgecl"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_imports_follow_the_layering(rule):
    assert _violations(RULES[rule]) == []


def test_the_scan_sees_lazy_imports(tmp_path):
    """A rule would catch an import inside a function (what the scan must not miss)."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from edgecl.commands.train import train_command\n")
    assert _imports(source) == [("edgecl.commands.train", 2),
                                ("edgecl.commands.train.train_command", 2)]
    assert _imports(source, top_level_only=True) == []
