"""A GPU stand-in for tests on a machine without one: code runs on the CPU while every tensor that
would live on the GPU is marked, and every operation a CUDA device would refuse is recorded.

`DeviceAudit` is a torch function mode. Inside it:
- `torch.device("cuda")` works on the CPU: `.to("cuda")`, `.cuda()`, `Module.to("cuda")` and
  factories with `device="cuda"` make CPU tensors marked as device tensors, and `.device` /
  `.is_cuda` of a marked tensor say cuda; `.cpu()` / `.to("cpu")` give an unmarked copy. Results
  of an operation on a marked tensor are marked. A mark belongs to the storage, so views, `.data`
  and a parameter moved in place share it; gradients of marked parameters are marked.
- Records (`DeviceAudit.records`) are kept for what CUDA refuses: an operation mixing marked and
  unmarked tensors (unmarked 0-dim tensors excepted: CUDA takes CPU scalars; indexing a device
  tensor with CPU indices and `copy_` across devices excepted too), a CPU `torch.Generator` used
  with device tensors or for a device factory, `.numpy()` / `np.asarray` of a device tensor, and
  `torch.save` of a payload holding device tensors (a CPU-only `torch.load(weights_only=True)`
  cannot read it back).
- `torch.cuda`'s runtime calls that need a GPU (synchronize, memory statistics, pinning) are
  stood in for by no-ops, so the code paths taken only on a GPU run too.

`audited_run()` redirects `edgecl.device.resolve_device` to the stand-in (the seam
`edgecl.device.redirected_device`), so a whole `edgecl train`, bench or grid trial takes the path
`--device cuda` takes.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.overrides import TorchFunctionMode

from edgecl.device import redirected_device

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
_TENSOR_PROPERTIES = {name: getattr(torch._C.TensorBase, name) for name in ("device", "is_cuda",
                                                                            "grad", "data")}
# Functions that may take tensors on two devices.
_CROSS_DEVICE = {"copy_", "__getitem__", "__setitem__"}
# Queries about tensors that compute nothing.
_NOT_COMPUTING = {"_has_compatible_shallow_copy_type", "is_same_size", "_is_functional_tensor"}


@dataclass(frozen=True)
class Record:
    """What CUDA would have refused, and where (the innermost project frame)."""

    problem: str
    operation: str
    where: str

    def __str__(self) -> str:
        return f"{self.where}: {self.operation}: {self.problem}"


def _is_cuda(device) -> bool:
    if device is None:
        return False
    if isinstance(device, int):
        return True  # a bare index means a CUDA device
    return torch.device(device).type == "cuda"


def _tensors(arguments) -> list:
    """The tensors among an operation's arguments, and in its lists and tuples of tensors (only
    those whose first item is a tensor are looked into: a deepcopy's memo is not)."""
    found = []
    for value in arguments:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            found += [item for item in value if isinstance(item, torch.Tensor)]
    return found


def _saved_tensors(value):
    """Every tensor in a payload of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _saved_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _saved_tensors(item)


def _project_frame() -> str:
    """file:line of the innermost frame in edgecl/, models/ or firmware_export/."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        name = frame.filename.replace("\\", "/")
        if any(f"/{part}/" in name for part in ("edgecl", "models", "firmware_export")) \
                and "device_audit" not in name:
            return f"{name.split('/')[-2]}/{name.split('/')[-1]}:{frame.lineno}"
    return "?"


def _name(func) -> str:
    owner = getattr(func, "__self__", None)
    if getattr(func, "__name__", "") in ("__get__", "__set__") and hasattr(owner, "__name__"):
        return f"Tensor.{owner.__name__}"
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class DeviceAudit(TorchFunctionMode):
    """Marks device tensors and records what CUDA refuses (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self._marked: dict[int, StorageWeakRef] = {}
        self.marked_ops = 0  # operations that ran on marked tensors (a run that never used the
        # stand-in device audits nothing)

    # --- marks ------------------------------------------------------------------------------

    def is_marked(self, tensor: torch.Tensor) -> bool:
        ref = self._marked.get(StorageWeakRef(tensor.untyped_storage()).cdata)
        return ref is not None and not ref.expired()

    def mark(self, value):
        """Mark an operation's result (a tensor, or the tensors of a tuple or list)."""
        for tensor in _tensors(value if isinstance(value, (list, tuple)) else [value]):
            ref = StorageWeakRef(tensor.untyped_storage())
            self._marked[ref.cdata] = ref
        if len(self._marked) > 200_000:
            self._marked = {k: r for k, r in self._marked.items() if not r.expired()}
        return value

    def record(self, problem: str, func) -> None:
        self.records.append(Record(problem, _name(func), _project_frame()))

    # --- the mode ---------------------------------------------------------------------------

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = _name(func)
        owner = getattr(func, "__self__", None)
        if owner is not None and owner is _TENSOR_PROPERTIES.get(name[7:]):
            return self._property(func, name[7:], args)
        if name in ("TensorBase.to", "Tensor.to", "TensorBase.cuda", "TensorBase.cpu"):
            return self._transfer(func, name, args, kwargs)
        if name in ("Tensor.__array__", "TensorBase.numpy") and self.is_marked(args[0]):
            self.record("a device tensor converted to numpy (CUDA: call .cpu() first)", func)
        if name in ("TensorBase.pin_memory", "Tensor.pin_memory"):
            if self.is_marked(args[0]):
                self.record("pin_memory() of a device tensor", func)
            return args[0].clone()
        if name in ("TensorBase.is_pinned", "Tensor.is_pinned"):
            return False
        to_device = _is_cuda(kwargs.get("device"))
        if to_device:
            kwargs["device"] = CPU
        kwargs.pop("pin_memory", None)
        inputs = _tensors(args) + _tensors(kwargs.values())
        marked = [t for t in inputs if self.is_marked(t)]
        on_device = to_device or bool(marked)
        if on_device:
            self.marked_ops += 1
            self._check_mix(func, name, args, inputs, marked)
            generator = kwargs.get("generator")
            if isinstance(generator, torch.Generator) and generator.device.type == "cpu":
                self.record("a CPU generator drawing for device tensors (CUDA: 'Expected a "
                            "'cuda' device type for generator')", func)
        out = func(*args, **kwargs)
        explicit_cpu = "device" in kwargs and not to_device
        if on_device and not explicit_cpu:
            self.mark(out)
        return out

    def _check_mix(self, func, name, args, inputs, marked) -> None:
        unmarked = [t for t in inputs if t.dim() > 0 and not self.is_marked(t)]
        if not marked or not unmarked:
            return
        method = name.split(".")[-1]
        if method in _NOT_COMPUTING:
            return
        if method in _CROSS_DEVICE and self.is_marked(args[0]):
            value = args[2] if method == "__setitem__" and len(args) > 2 else None
            if not (isinstance(value, torch.Tensor) and value.dim() > 0
                    and not self.is_marked(value)):
                return  # CPU indices into a device tensor, or a copy across devices
        self.record("device and CPU tensors in one operation (CUDA: 'Expected all tensors to be "
                    "on the same device')", func)

    def _property(self, func, prop: str, args):
        tensor = args[0]
        if prop == "device" and len(args) == 1:
            return CUDA if self.is_marked(tensor) else func(*args)
        if prop == "is_cuda" and len(args) == 1:
            return self.is_marked(tensor)
        out = func(*args)
        if prop in ("grad", "data") and len(args) == 1 and out is not None \
                and self.is_marked(tensor):
            self.mark(out)  # gradients come from autograd, which the mode does not see
        return out

    def _transfer(self, func, name, args, kwargs):
        tensor, rest = args[0], args[1:]
        kwargs.pop("copy", None)  # the audit copies whenever a tensor changes device
        if name.endswith("cuda"):
            target = CUDA
        elif name.endswith("cpu"):
            target = CPU
        elif rest and isinstance(rest[0], torch.Tensor):
            target = CUDA if self.is_marked(rest[0]) else CPU
            kwargs.setdefault("dtype", rest[0].dtype)
            rest = rest[1:]
        else:
            device, dtype, non_blocking, _ = torch._C._nn._parse_to(*rest, **kwargs)
            target = device
            rest, kwargs = (), {"dtype": dtype if dtype is not None else tensor.dtype,
                                "non_blocking": non_blocking}
        if target is None:  # a dtype conversion: stays where it is
            out = func(tensor, *rest, **kwargs)
            return self.mark(out) if self.is_marked(tensor) else out
        kwargs.pop("device", None)
        dtype = kwargs.get("dtype") or tensor.dtype
        moved = _is_cuda(target)
        if moved == self.is_marked(tensor):
            return tensor.to(dtype=dtype)  # already there (a new tensor only for a new dtype)
        self.marked_ops += 1
        out = tensor.to(dtype=dtype, copy=True)
        return self.mark(out) if moved else out


class _FakeCudaRuntime:
    """torch.cuda's calls that need a GPU, as no-ops (memory statistics read 0)."""

    PATCHES = {"synchronize": lambda *a, **k: None,
               "max_memory_allocated": lambda *a, **k: 0,
               "reset_peak_memory_stats": lambda *a, **k: None,
               "current_device": lambda: 0}


@contextlib.contextmanager
def audited_run(monkeypatch=None):
    """Within the block, runs resolve their device to the marked stand-in; yields the
    DeviceAudit whose `records` say what a GPU would have refused. Also records `torch.save` of
    device tensors."""
    audit = DeviceAudit()
    real_save = torch.save

    def save(obj, *args, **kwargs):
        if any(audit.is_marked(t) for t in _saved_tensors(obj)):
            audit.records.append(Record("torch.save of device tensors (a CPU-only machine "
                                        "cannot torch.load(weights_only=True) them)",
                                        "torch.save", _project_frame()))
        return real_save(obj, *args, **kwargs)

    real_deepcopy = torch.Tensor.__deepcopy__

    def deepcopy(tensor, memo):  # torch function modes do not see Tensor.__deepcopy__
        out = real_deepcopy(tensor, memo)
        return audit.mark(out) if audit.is_marked(tensor) else out

    saved = {name: getattr(torch.cuda, name) for name in _FakeCudaRuntime.PATCHES}
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.save = save
        torch.Tensor.__deepcopy__ = deepcopy
        for name, stand_in in _FakeCudaRuntime.PATCHES.items():
            setattr(torch.cuda, name, stand_in)
        with redirected_device(CUDA), audit:
            yield audit
    finally:
        torch.save = real_save
        torch.Tensor.__deepcopy__ = real_deepcopy
        for name, function in saved.items():
            setattr(torch.cuda, name, function)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
