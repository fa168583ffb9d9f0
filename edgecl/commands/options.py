"""Click options generated from the option declarations (edgecl.options.Option), and a command
whose --help shows them under the headings of edgecl.options.GROUPS. Shared by `edgecl train`
and `edgecl bench`.

Click has no option groups; `GroupedCommand` is a small subclass rather than a dependency such as
cloup or click-option-group, since one `format_options` is all the headings need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

from edgecl.options import GROUPS, Option

_TERM_COLUMN = 30  # click's widest first column in a help listing


class GroupedOption(click.Option):
    """A click option that knows its heading in --help."""

    def __init__(self, *args, group: str = "run", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group = group


class GroupedCommand(click.Command):
    """A command whose --help lists its options under one heading per group, in GROUPS order
    (options without a group, such as --help, under the last)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {group: [] for group in GROUPS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections[getattr(param, "group", GROUPS[-1])].append(record)
        # One first-column width for every section (write_dl sizes it per call).
        width = min(max(len(term) for records in sections.values() for term, _ in records),
                    _TERM_COLUMN)
        for group, records in sections.items():
            if records:
                with formatter.section(f"{group.capitalize()} options"):
                    formatter.write_dl([(term.ljust(width), text) for term, text in records],
                                       col_max=_TERM_COLUMN)


def _int_choice(_ctx, _param, value):
    return None if value is None else int(value)


def click_option(option: Option, *, no_default: bool = False, **overrides: Any) -> Callable:
    """The click option of a declared Option (`overrides` replace click keyword arguments;
    `no_default`: give click no default, as for --config)."""
    kwargs: dict[str, Any] = dict(help=option.help_text(), group=option.group, cls=GroupedOption)
    declarations = [option.flag_name]
    if option.is_bool and option.flag == "on":
        kwargs.update(is_flag=True)
    elif option.is_bool:
        declarations = [f"{option.flag_name}/--no-{option.flag_name[2:]}"]
        kwargs.update(default=option.default, show_default=option.show_default)
    else:
        kwargs.update(type=option.click_type(), default=option.default,
                      show_default=option.show_default or None, metavar=option.metavar)
        if option.int_choices():  # parsed as text by click.Choice, handed on as an int
            kwargs.update(default=str(option.default), callback=_int_choice)
    if no_default:
        kwargs.pop("default", None)
    kwargs.update(overrides)
    kwargs = {key: value for key, value in kwargs.items() if value is not None or key == "default"}
    return click.option(*declarations, option.name, **kwargs)


def add_options(options: Iterable[Option], **overrides: dict[str, Any]) -> Callable:
    """Decorator adding the click option of each of `options` (in their order);
    `overrides[name]` are click keyword arguments for that option."""

    def decorate(command):
        for option in reversed(list(options)):
            command = click_option(option, **overrides.get(option.name, {}))(command)
        return command

    return decorate


def run_option(name: str) -> Option:
    """The declaration of the run option `name` (edgecl.config.run_options)."""
    from edgecl.config import run_options

    return run_options()[name]
