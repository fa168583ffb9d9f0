"""Samplers by name. A new sampler is one module with a @register_sampler class, imported in
edgecl/samplers/__init__.py; the trainer and CLI pick it up from here."""

from __future__ import annotations

from edgecl.errors import EdgeclError
from edgecl.samplers.base import Sampler, SamplerOptions

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
    """Registered sampler names, in registration order."""
    return list(_SAMPLERS)


def sampler_class(name: str) -> type[Sampler]:
    """The class registered under `name`."""
    try:
        return _SAMPLERS[name]
    except KeyError:
        raise EdgeclError(f"--mem-manage: expected one of {', '.join(_SAMPLERS)}, got {name!r}") from None


def build_sampler(name: str, options: SamplerOptions | None = None) -> Sampler:
    """A fresh sampler (with its own run-long state) for `name`."""
    return sampler_class(name).from_options(options or SamplerOptions())
