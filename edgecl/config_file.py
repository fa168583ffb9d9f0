"""`edgecl train --config FILE.toml`: options from a TOML file, flags on the command line win.

Every run writes its resolved options to RUN/config.toml, so `edgecl train --config
RUN/config.toml` runs the same experiment again. Keys are `edgecl train` option names, with
dashes or underscores (`mem-manage` or `mem_manage`); an unknown key is a one-line error naming
it, and so is a value of another type than the option's (`value_error`: a boolean is not an
integer, a float is not an integer; an integer is a number), since click would coerce it
(`epochs = true` would train 1 epoch). Read with the standard library's tomllib; written by hand,
since the values are flat scalars.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from edgecl.errors import EdgeclError
from edgecl.fileio import atomic_write_text

CONFIG_NAME = "config.toml"


def read_config_file(path: str | Path, known: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """{option name: value} from a TOML file of `edgecl train` options. `known`: the option
    names, or {name: click parameter type} to check each value's type too."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EdgeclError(f"--config: {path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise EdgeclError(f"--config: {path}: unreadable ({error})") from None
    except tomllib.TOMLDecodeError as error:
        raise EdgeclError(f"--config: {path}: not valid TOML ({error})") from None
    types = known if isinstance(known, Mapping) else {}
    known = set(known)
    values = {}
    for key, value in document.items():
        name = key.replace("-", "_")
        if name not in known:
            raise EdgeclError(f"--config: {path}: unknown key {key!r}; expected `edgecl train` "
                              f"option names such as mem-manage or epochs")
        if isinstance(value, (dict, list)):
            raise EdgeclError(f"--config: {path}: key {key!r} must be a single value")
        problem = value_error(value, types.get(name))
        if problem:
            raise EdgeclError(f"--config: {path}: key {key!r} expects {problem}")
        values[name] = value
    return values


def value_error(value: Any, param_type) -> str | None:
    """What a TOML value of an option of click type `param_type` should have been ("an integer,
    got true (a boolean)"), or None when it has the option's type (or the type is unknown)."""
    import click

    def got(expected: str) -> str:
        return f"{expected}, got {_toml_value(value)} ({_kind(value)})"

    if param_type is None:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(param_type, click.types.BoolParamType):
        return None if isinstance(value, bool) else got("true or false")
    if isinstance(param_type, click.types.IntParamType):
        return None if is_int else got("an integer")
    if isinstance(param_type, click.types.FloatParamType):
        return None if is_int or isinstance(value, float) else got("a number")
    if isinstance(param_type, click.Choice):
        # Choices of integers (a sampler's k) are listed as strings; the written file has ints.
        if isinstance(value, str) or (is_int and str(value) in param_type.choices):
            return None
        return got(f"one of {', '.join(map(str, param_type.choices))}")
    if isinstance(param_type, click.types.StringParamType):
        # Byte and MAC counts are text options ("4MB") that RUN/config.toml writes as integers.
        return None if isinstance(value, str) or is_int else got("a string")
    return None if isinstance(value, str) else got("a string")


def _kind(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a float"),
                       (str, "a string")):
        if isinstance(value, kind):
            return name
    return f"a TOML {type(value).__name__}"


def resolved_options(config) -> dict[str, Any]:
    """The options of a RunConfig that reproduce it: unset ones, steps' own options at their
    default, options of samplers other than the run's, memory options of a run without memory,
    and the exemplar count that a byte budget replaces are left out (giving them would be an
    error), and the run's folder name is fixed."""
    from edgecl.config import memory_options
    from edgecl.samplers import option_owners, sampler_options
    from edgecl.steps import step_options

    values = dict(config.to_dict(), exp_name=config.name)
    for name, option in step_options().items():  # at its default: as before the step existed
        if values.get(name) == option.default:
            values.pop(name)
    for name in sampler_options():
        if not config.uses_memory or config.mem_manage not in option_owners(name):
            values.pop(name, None)
    if not config.uses_memory:
        for name in memory_options():
            values.pop(name, None)
    elif values.get("memory_bytes") is not None:
        values.pop("memory_size", None)
    return {name: value for name, value in values.items() if value is not None}


def write_config_file(run_dir: str | Path, config) -> Path:
    """RUN/config.toml with the run's resolved options, written atomically."""
    lines = ["# edgecl train options of this run: edgecl train --config config.toml"]
    for name, value in resolved_options(config).items():
        lines.append(f"{name.replace('_', '-')} = {_toml_value(value)}")
    return atomic_write_text(Path(run_dir) / CONFIG_NAME, "\n".join(lines) + "\n")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
