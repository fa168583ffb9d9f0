"""Memory samplers, found by name: every module of this package is imported, so a sampler is one
file with a @register_sampler class (see edgecl.samplers.base for the interface)."""

import importlib
import pkgutil

from edgecl.samplers.base import Candidate, Sampler, SamplerOption, SamplerOptions, SelectionContext
from edgecl.samplers.registry import (
    build_sampler,
    option_owners,
    register_sampler,
    sampler_class,
    sampler_names,
    sampler_options,
)

# Every other module holds samplers; perturbations (torch) is imported by the sampler using it.
_NOT_SAMPLERS = {"base", "registry", "perturbations"}
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _NOT_SAMPLERS:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Candidate", "Sampler", "SamplerOption", "SamplerOptions", "SelectionContext",
           "build_sampler", "option_owners", "register_sampler", "sampler_class", "sampler_names",
           "sampler_options"]
