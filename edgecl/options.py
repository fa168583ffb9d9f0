"""Option metadata: every `edgecl train` option is declared once, beside what owns it.

A RunConfig field carries an `Option` in its metadata (`run_field(default, Option(...))`); a
sampler declares its own options (edgecl.samplers.base.SamplerOption), which
`SamplerOption.as_option` turns into the same `Option`. Everything else is generated from these
declarations: the click options and grouped help of `edgecl train` (edgecl.commands.train), the
keys of its TOML config file (edgecl.config_file), the range and choice checks of RunConfig, the
run identity and its default name's hash (edgecl.config), the grid's trial hash
(edgecl.grid.spec) and the report's method key (edgecl.report.aggregate).

This module sits at the bottom of the package: it imports the standard library, click (for the
types that parse a value as the command line does) and edgecl.limits; registries that name the
valid choices (models, samplers, memory formats...) are read lazily through "module:NAME" paths.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import click

from edgecl.limits import Range

# Headings of `edgecl train --help`, in order.
GROUPS = ("data", "model", "memory", "learning", "budget", "export", "run")


def resolve(path: str) -> Any:
    """The object at "module:NAME" (called if it is a function, e.g. a registry's names)."""
    module, _, name = path.partition(":")
    value = getattr(importlib.import_module(module), name)
    return value() if callable(value) and not isinstance(value, type) else value


@dataclass(frozen=True)
class Option:
    """What one option means, beyond its name and default.

    - `help`: the --help text, or a function returning it (text built from a registry).
    - `group`: its heading in `edgecl train --help` (one of GROUPS).
    - `type`: the click type that parses it on the command line and in a grid spec; None: from
      `choices`, else from the default (bool: an on/off pair).
    - `choices`: the valid values, or a "module:NAME" path to the registry that holds them.
    - `range`: the valid numbers (edgecl.limits.Range); None values are always valid.
    - `identity`: part of a run's identity (run.json, the hash in its default name, the grid's
      trial hash). Options that do not change what a run computes (its folder, threads, quiet)
      are not, so a run may be resumed with other values of them.
    - `method`: part of the report's method key (seed and test fold are identity but not method).
    - `left_out_at_default`: added after runs existed; at its default it is left out of the
      identity, so older runs keep their identity and name.
    - `replay_only`: used only with --mode replay (a memory's option).
    - `flag`: "pair" (--x/--no-x) or "on" (--x alone) for an on/off option.
    - `metavar`, `show_default`: as click's.
    """

    help: str | Callable[[], str] | None = None
    group: str = "run"
    type: Any = None
    choices: tuple | str | None = None
    range: Range | None = None
    identity: bool = True
    method: bool = True
    left_out_at_default: bool = False
    replay_only: bool = False
    flag: str = "pair"
    metavar: str | None = None
    show_default: bool = True
    # Filled by `bound`: the option's field name and default.
    name: str = ""
    default: Any = None

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"option group {self.group!r}: expected one of {GROUPS}")
        if self.method and not self.identity:
            raise ValueError("an option outside the run identity cannot be part of a method")

    def bound(self, name: str, default: Any) -> Option:
        return replace(self, name=name, default=default)

    @property
    def flag_name(self) -> str:
        """--memory-size for memory_size."""
        return "--" + self.name.replace("_", "-")

    @property
    def is_bool(self) -> bool:
        return isinstance(self.default, bool)

    def help_text(self) -> str | None:
        return self.help() if callable(self.help) else self.help

    def allowed(self) -> Sequence | None:
        """The valid values (None: any value of the type)."""
        return resolve(self.choices) if isinstance(self.choices, str) else self.choices

    def int_choices(self) -> bool:
        allowed = self.allowed()
        return allowed is not None and all(isinstance(c, int) for c in allowed)

    def click_type(self) -> click.ParamType:
        """The click type that parses this option's text (click.BOOL for an on/off option)."""
        if self.type is not None:
            return click.types.convert_type(self.type)
        allowed = self.allowed()
        if allowed is not None:  # integer choices are parsed as their text, then int()
            return click.Choice([str(c) for c in allowed] if self.int_choices()
                                else list(allowed))
        if self.is_bool:
            return click.BOOL
        return click.types.convert_type(type(self.default) if self.default is not None else str)

    def check(self, value: Any) -> None:
        """Raise EdgeclError naming the option when `value` is not one of its valid values."""
        from edgecl.errors import EdgeclError

        allowed = self.allowed()
        unset = value is None and self.default is None  # an option that may be left unset
        if allowed is not None and value not in allowed and not unset:
            raise EdgeclError(f"{self.flag_name}: expected one of "
                              f"{', '.join(str(c) for c in allowed)}, got {value!r}")
        if self.range is not None and value is not None:
            self.range.check(self.flag_name, value)


class DatasetName(click.ParamType):
    """A dataset name in any accepted spelling (case-insensitive, aliases such as esc50 and tau),
    converted to its canonical name."""

    name = "dataset"

    def get_metavar(self, param, ctx=None) -> str:
        from edgecl.data import DATASET_NAMES

        return "[" + "|".join(DATASET_NAMES) + "]"

    def convert(self, value, param, ctx):
        from edgecl.data import canonical_name
        from edgecl.errors import EdgeclError

        try:
            return canonical_name(str(value))
        except EdgeclError as error:
            self.fail(str(error).removeprefix("--dataset: "), param, ctx)


def run_field(default: Any, option: Option, **kwargs) -> Any:
    """A dataclass field whose metadata declares its option."""
    return field(default=default, metadata={"option": option}, **kwargs)


def options_of_fields(cls) -> dict[str, Option]:
    """The options of a dataclass's fields declared with `run_field`, in field order."""
    from dataclasses import MISSING, fields

    out = {}
    for f in fields(cls):
        option = f.metadata.get("option")
        if option is not None:
            default = None if f.default is MISSING else f.default
            out[f.name] = option.bound(f.name, default)
    return out


def names_where(options: dict[str, Option], test: Callable[[Option], bool]) -> tuple[str, ...]:
    return tuple(name for name, option in options.items() if test(option))
