"""Samplers by name. A new sampler is one module in edgecl/samplers/ with a @register_sampler
class; the package imports every module, and the trainer, CLI, config and bench read from here."""

from __future__ import annotations

from edgecl.errors import EdgeclError
from edgecl.samplers.base import Sampler, SamplerOption, SamplerOptions

_SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make `cls` available under `cls.name`."""
    if not cls.name:
        raise ValueError(f"sampler class {cls.__name__} has no name")
    if cls.name in _SAMPLERS and _SAMPLERS[cls.name] is not cls:
        raise ValueError(f"sampler name {cls.name!r} registered twice")
    _SAMPLERS[cls.name] = cls
    return cls


def sampler_names() -> list[str]:
    """Registered sampler names, sorted."""
    return sorted(_SAMPLERS)


def sampler_class(name: str) -> type[Sampler]:
    """The class registered under `name`."""
    try:
        return _SAMPLERS[name]
    except KeyError:
        raise EdgeclError(f"--mem-manage: expected one of {', '.join(sampler_names())}, "
                          f"got {name!r}") from None


def sampler_options() -> dict[str, SamplerOption]:
    """Every registered sampler's options by name (samplers may share an option)."""
    options: dict[str, SamplerOption] = {}
    for name in sampler_names():
        for option in _SAMPLERS[name].options:
            if options.setdefault(option.name, option) != option:
                raise ValueError(f"sampler option {option.name!r} declared twice, differently")
    return options


def option_owners(option_name: str) -> list[str]:
    """Names of the samplers that take `option_name`."""
    return [name for name in sampler_names()
            if any(o.name == option_name for o in _SAMPLERS[name].options)]


def build_sampler(name: str, options: SamplerOptions | None = None) -> Sampler:
    """A fresh sampler (with its own run-long state) for `name`."""
    return sampler_class(name).from_options(options or {})
