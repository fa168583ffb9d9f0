"""CLI commands, one module each. Every module exposes one click command (or group)."""

from __future__ import annotations

import importlib

# (module, attribute) of each command; imported when the CLI starts.
_COMMAND_MODULES: list[tuple[str, str]] = [
    ("edgecl.commands.train", "train_command"),
    ("edgecl.commands.summarize", "summarize_command"),
    ("edgecl.commands.bench", "bench"),
    ("edgecl.commands.data", "data"),
    ("edgecl.commands.export", "export_command"),
    ("edgecl.commands.infer", "infer_command"),
    ("edgecl.commands.device", "device"),
    ("edgecl.commands.grid", "grid_command"),
    ("edgecl.commands.report", "report_command"),
    ("edgecl.commands.diagnose", "diagnose_command"),
]

COMMANDS = [getattr(importlib.import_module(module), name) for module, name in _COMMAND_MODULES]
