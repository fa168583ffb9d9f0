"""Replay memory: a bounded store of encoded exemplars refilled by a sampler after each phase."""

from edgecl.memory.buffer import Exemplar, ReplayMemory, capacity_for_budget

__all__ = ["Exemplar", "ReplayMemory", "capacity_for_budget"]
