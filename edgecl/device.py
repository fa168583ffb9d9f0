"""Where a run computes: `--device auto|cpu|cuda`.

The model lives on the run's device; feature batches and targets are moved there when a phase's
data is read (edgecl.items.ClipItems.data), the front end's output comes back to the CPU for the
feature cache and store, and samplers bring embeddings and predictions back for numpy. Random
draws that decide results (shuffles, perturbations) stay on CPU generators, so CPU results do not
depend on this module.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from edgecl.errors import EdgeclError

DEVICES = ("auto", "cpu", "cuda")
# Where runs go instead of the device their option names (a stack; empty: nowhere else).
_REDIRECTS: list = []


@contextmanager
def redirected_device(device):
    """Within the block, `resolve_device` returns `device` for every valid name: the seam through
    which the device-correctness audit (tests/device_audit.py) sends a whole run, bench or grid
    trial to its marked stand-in for a GPU."""
    _REDIRECTS.append(device)
    try:
        yield device
    finally:
        _REDIRECTS.pop()


def resolve_device(name: str):
    """torch.device for `--device name`: auto is cuda when available, else cpu."""
    import torch

    if name not in DEVICES:
        raise EdgeclError(f"--device: expected one of {', '.join(DEVICES)}, got {name!r}")
    if _REDIRECTS:
        return _REDIRECTS[-1]
    deterministic_cuda_env()  # before anything starts CUDA
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise EdgeclError("--device cuda: no CUDA device is available to torch here; use "
                          "--device cpu or auto")
    return torch.device(name)


# cuBLAS reads its workspace setting when CUDA starts; deterministic algorithms need it.
CUBLAS_WORKSPACE = ":4096:8"


def deterministic_cuda_env(environ=os.environ) -> None:
    """Set CUBLAS_WORKSPACE_CONFIG (unless the user did) so that cuBLAS may run
    deterministically: it must be in the environment before CUDA starts."""
    environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)


def deterministic_kernels(device, allow_tf32: bool = False) -> None:
    """Make a run on `device` reproducible: on a GPU, deterministic algorithms (cuDNN's too, no
    autotuning) and, unless `allow_tf32`, no TF32 in matmuls and convolutions (TF32 rounds their
    inputs to 10 mantissa bits). On the CPU nothing changes: its kernels are deterministic for a
    given thread count. An operation with no deterministic GPU kernel warns rather than stopping
    the run (warn_only): none is known on the training path, but none has been run on a GPU yet,
    and a warning in the log costs less than a grid of crashed trials."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if device.type != "cuda":
        return
    deterministic_cuda_env()
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def peak_gpu_memory_bytes(device) -> int | None:
    """The most GPU memory torch has held at once on `device` so far (None off a GPU)."""
    if device.type != "cuda":
        return None
    import torch

    return int(torch.cuda.max_memory_allocated(device))


def device_change_note(previous: dict | None, done: int, device) -> str | None:
    """The train.log line of a run resumed on another device than its completed phases ran on
    (`previous`: the interrupted run's results.json), or None: a GPU's float sums differ from
    the CPU's, so the rest will not match an uninterrupted run bit for bit."""
    ran_on = sorted({str(p.get("device")) for p in (previous or {}).get("phases") or []
                     if p.get("device") is not None})
    if not ran_on or ran_on == [str(device)]:
        return None
    return (f"note: phases 0-{done} ran on {', '.join(ran_on)}, this session on {device}; the "
            f"results will differ from an uninterrupted run")


def synchronize(device) -> None:
    """Wait for `device`'s queued kernels (a GPU's run asynchronously): a timing that ends
    without it measures the launches, not the work. Nothing to wait for on the CPU."""
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


def cpu_state(state: dict) -> dict:
    """A state dict's tensors as CPU copies: what is saved loads with plain
    torch.load(weights_only=True) on a machine without the device, and later training of the
    module does not change it."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def to_device(tensor, device):
    """`tensor` (on the CPU) copied to `device`; to a GPU through pinned memory without waiting
    (the copy is ordered before the kernels that read it on the same stream)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def forked_rng(device):
    """torch.random.fork_rng over the CPU's generator and, on a GPU, `device`'s: random draws
    inside the block (a measurement's dropout) leave the run's generators as they were."""
    import torch

    devices = []
    if device.type == "cuda" and torch.cuda.is_available():
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    return torch.random.fork_rng(devices=devices, device_type="cuda")


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
