"""Memory samplers: random, reservoir, prototype (herding) and uncertainty, found by name.

Adding a sampler: write a module with a Sampler subclass decorated with @register_sampler and
import it below. Nothing in the trainer changes.
"""

from edgecl.samplers.base import Candidate, Sampler, SamplerOptions, SelectionContext
from edgecl.samplers.registry import build_sampler, register_sampler, sampler_class, sampler_names

# Importing the modules registers the samplers (order = order in --help).
from edgecl.samplers import random_choice, reservoir, prototype, uncertainty  # noqa: E402,F401

__all__ = ["Candidate", "Sampler", "SamplerOptions", "SelectionContext", "build_sampler",
           "register_sampler", "sampler_class", "sampler_names"]
