"""Samplers by name. A new sampler is one module in edgecl/samplers/ with a @register_sampler
class; the package imports every module, and the trainer, CLI, config and bench read from here."""

from __future__ import annotations

from edgecl.errors import EdgeclError
from edgecl.registry import declared_options, register_named
from edgecl.samplers.base import Sampler, SamplerOption, SamplerOptions

_SAMPLERS: dict[str, type[Sampler]] = {}


def register_sampler(cls: type[Sampler]) -> type[Sampler]:
    """Class decorator: make `cls` available under `cls.name`."""
    return register_named(_SAMPLERS, cls, "sampler")


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
    return declared_options((_SAMPLERS[name] for name in sampler_names()), "sampler")


def option_owners(option_name: str) -> list[str]:
    """Names of the samplers that take `option_name`."""
    return [name for name in sampler_names()
            if any(o.name == option_name for o in _SAMPLERS[name].options)]


def build_sampler(name: str, options: SamplerOptions | None = None) -> Sampler:
    """A fresh sampler (with its own run-long state) for `name`."""
    return sampler_class(name).from_options(options or {})
