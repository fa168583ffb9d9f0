"""Where a run computes: `--device auto|cpu|cuda`.

The model lives on the run's device; feature batches and targets are moved there when a phase's
data is read (edgecl.items.ClipItems.data), the front end's output comes back to the CPU for the
feature cache and store, and samplers bring embeddings and predictions back for numpy. Random
draws that decide results (shuffles, perturbations) stay on CPU generators, so CPU results do not
depend on this module.
"""

from __future__ import annotations

from contextlib import contextmanager

from edgecl.errors import EdgeclError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str):
    """torch.device for `--device name`: auto is cuda when available, else cpu."""
    import torch

    if name not in DEVICES:
        raise EdgeclError(f"--device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeclError("--device cuda: no CUDA device is available to torch here; use "
                          "--device cpu or auto")
    return torch.device(name)


def device_of(module):
    """The device of a module's first parameter or buffer (cpu when it has none)."""
    import torch

    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def torch_threads(count: int):
    """Run the block with torch on `count` CPU threads, then restore the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
