"""Device budgets, by job: `units` (byte sizes and counts), `macs` (compute), `ram` (memory figures).

The limits a phase enforces live with the training loop (`edgecl.training.stop`); the replay
memory's byte budget lives with the memory (`edgecl.memory.buffer.capacity_for_budget`).
"""
