"""Command-line options whose choices come from the registries (datasets, models, samplers and
their own options, memory formats), shared by `edgecl train` and `edgecl bench memory-update`."""

from __future__ import annotations

from collections.abc import Callable

import click


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


def dataset_option(default: str) -> Callable:
    from edgecl.data import all_aliases

    aliases = sorted(a for a, name in all_aliases().items() if a != name.lower())
    return click.option("--dataset", type=DatasetName(), default=default, show_default=True,
                        help=f"Dataset to learn from (any case; aliases {', '.join(aliases)}).")


def model_option(default: str) -> Callable:
    from models import MODEL_NAMES

    return click.option("--model", type=click.Choice(MODEL_NAMES), default=default,
                        show_default=True)


def memory_format_choice() -> click.Choice:
    from edgecl.memory.formats import FORMAT_NAMES

    return click.Choice(FORMAT_NAMES)


def mem_manage_choice() -> click.Choice:
    from edgecl.samplers import sampler_names

    return click.Choice(sampler_names())


def _int_choice(_ctx, _param, value):
    return None if value is None else int(value)


def sampler_options(only: Callable[[str], bool] = lambda name: True) -> Callable:
    """Decorator adding one CLI option per registered sampler option (`only(name)` filters)."""
    from edgecl.samplers import option_owners, sampler_options as declared

    return _declared_options(
        [option for option in declared().values() if only(option.name)],
        lambda option: f"{option.help} (--mem-manage {', '.join(option_owners(option.name))})")


def step_options() -> Callable:
    """Decorator adding one CLI option per option a training step declares (edgecl.steps)."""
    from edgecl.steps import step_options as declared

    return _declared_options(list(declared().values()), lambda option: option.help)


def _declared_options(options: list, help_of: Callable) -> Callable:
    """Decorator adding a CLI option per SamplerOption-like declaration (`help_of(option)`: its
    help text)."""

    def decorate(command):
        for option in reversed(options):
            kwargs = dict(default=option.default, show_default=True, help=help_of(option))
            if option.choices is not None and all(isinstance(c, int) for c in option.choices):
                kwargs.update(type=click.Choice([str(c) for c in option.choices]),
                              default=str(option.default), callback=_int_choice)
            elif option.choices is not None:
                kwargs.update(type=click.Choice(list(option.choices)))
            else:
                kwargs.update(type=type(option.default))
            command = click.option(option.flag, option.name, **kwargs)(command)
        return command

    return decorate
