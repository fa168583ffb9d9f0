"""Replay memory: bounded, slot order kept, nothing re-encoded, class balance reported."""

from __future__ import annotations

import numpy as np
import pytest

from edgecl.errors import EdgeclError
from edgecl.memory import ReplayMemory
from edgecl.memory.formats import get_format


def _items(n, start=0, length=16):
    return [(f"clip{start + i}", (start + i) % 3, np.full(length, (start + i) / 100, np.float32))
            for i in range(n)]


def test_update_keeps_chosen_order_and_reuses_stored_exemplars():
    memory = ReplayMemory(4, get_format("float32"))
    memory.update([2, 0, 1], _items(3))
    assert memory.keys() == ["clip2", "clip0", "clip1"]
    stored = memory.exemplars[0]
    # candidates: the three slots, then three new clips; keep slot 0 and new clip 4
    memory.update([0, 4], _items(3, start=3))
    assert memory.keys() == ["clip2", "clip4"]
    assert memory.exemplars[0] is stored  # not re-encoded
    np.testing.assert_array_equal(memory.decode(1), np.full(16, 0.04, np.float32))


def test_capacity_is_never_exceeded():
    memory = ReplayMemory(2, get_format("float32"))
    with pytest.raises(EdgeclError, match="capacity"):
        memory.update([0, 1, 2], _items(3))
    assert len(memory) == 0


def test_duplicate_or_out_of_range_choice_is_rejected():
    memory = ReplayMemory(5, get_format("float32"))
    with pytest.raises(EdgeclError):
        memory.update([0, 0], _items(2))
    with pytest.raises(EdgeclError):
        memory.update([7], _items(2))


def test_lazy_loader_runs_only_for_chosen_clips():
    calls = []

    def loader(i):
        def load():
            calls.append(i)
            return np.zeros(8, np.float32)
        return load

    memory = ReplayMemory(1, get_format("pcm16"))
    memory.update([1], [(f"k{i}", 0, loader(i)) for i in range(3)])
    assert calls == [1]
    assert memory.stored_bytes() == get_format("pcm16").nbytes((8,))


def test_budget_capacity_and_class_balance():
    fmt = get_format("pcm16")
    memory = ReplayMemory.from_budget(10 * fmt.nbytes((16,)) + 3, fmt, (16,))
    assert memory.capacity == 10
    memory.update([0, 1, 2, 3, 4], _items(5))
    assert memory.class_balance(["a", "b", "c"]) == {"a": 2, "b": 2, "c": 1}
    memory.resize(3)
    assert memory.keys() == ["clip0", "clip1", "clip2"]
