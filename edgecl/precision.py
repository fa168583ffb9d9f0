"""Training precision (`--precision fp32|bf16|auto`): which number format the training forward
pass runs in, and the autocast context that makes it so.

`fp32` is float32 throughout. `bf16` runs the backbone and head of the training forward under
`torch.autocast` with bfloat16 (on a CUDA GPU without bf16: float16 with a gradient scaler);
`auto` is bf16 only where the hardware runs it natively, fp32 elsewhere, resolved once at the
start of a run (`resolve_precision`). On this project's 44.1 kHz BC-ResNet epochs, bf16 autocast
on a CPU with AVX-512 BF16 (no AMX) costs about 1.5-1.7x less CPU time than fp32
(docs/results/precision.md); on a CPU without native bf16 it is emulated and slower, hence `auto`.

Which ops run in which type under bf16, and why:
- The front end (log-mel) stays float32: it runs outside the autocast (features are computed and
  cached before training), it is what ships on the device, and the feature store caches it.
- The backbone and head (convolutions, linear layers, activations) run under autocast: convs and
  matmuls take bfloat16 inputs and give bfloat16 outputs, the bulk of the time.
- BatchNorm: its weights and running mean/variance stay float32 buffers; on the CPU it takes and
  gives bfloat16 activations, but the kernel accumulates the batch statistics in float32 (checked:
  running variance of bf16 inputs equal to float32 maths on the same rounded inputs to 1e-9), so
  the statistics the exported model folds are float32.
- The loss is computed in float32: the logits and embedding are cast to float before the
  cross-entropy and the distillation losses (log-softmax of bf16 logits would lose the small
  probabilities the loss lives on).
- Weights, gradients and Adam's state stay float32: autocast casts copies of the weights for each
  op and never changes the parameters, so the master weights, the checkpoint and every export are
  float32 and the export parity rule is unchanged.
- The BatchNorm recalibration forward after each epoch and the validation pass run under the
  autocast too: left in float32, they cost about as much as the training steps bf16 speeds up. The
  recalibrated statistics are float32 buffers accumulated in float32 (as in training); the
  validation loss is computed on logits cast to float32.
- Testing (the accuracy a phase reports and compares with the exported model) and the memory
  update's embedding pass run in float32 (outside the autocast): the first is the figure of
  record, and bf16 would change the memory's content (docs/results/precision.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgecl.errors import EdgeclError

PRECISIONS = ("fp32", "bf16", "auto")
# /proc/cpuinfo flags of x86 CPUs whose bfloat16 maths runs natively (oneDNN uses them).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 maths natively: x86 with AVX-512 BF16 or AMX (torch's own
    check, else the /proc/cpuinfo flags). Other CPUs emulate it, slower than float32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these helpers
        pass
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return any(flag in value.split() for flag in NATIVE_BF16_FLAGS)
    return False


def cuda_has_bf16() -> bool:
    """Whether the current CUDA GPU supports bfloat16 (Ampere and later)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def resolve_precision(requested: str, device_type: str) -> str:
    """The precision a run trains in on `device_type` ("cpu" or "cuda"): `auto` becomes bf16 where
    the hardware runs it natively, else fp32; fp32 and bf16 stay as they are."""
    if requested not in PRECISIONS:
        raise EdgeclError(f"--precision: expected one of {', '.join(PRECISIONS)}, got "
                          f"{requested!r}")
    if requested != "auto":
        return requested
    native = cuda_has_bf16() if device_type == "cuda" else cpu_has_native_bf16()
    return "bf16" if native else "fp32"


@dataclass(frozen=True)
class TrainingPrecision:
    """The resolved precision of a run on one device: `autocast()` wraps the training forward,
    `optimizer_step(optimizer)` gives the step that follows the loss (with a gradient scaler under
    float16)."""

    name: str = "fp32"  # fp32 or bf16 (resolved)
    device_type: str = "cpu"
    requested: str = "fp32"  # as given: fp32, bf16 or auto

    @classmethod
    def for_device(cls, requested: str, device) -> TrainingPrecision:
        device_type = getattr(device, "type", str(device))
        return cls(resolve_precision(requested, device_type), device_type, requested)

    @property
    def autocast_dtype(self) -> str | None:
        """The reduced type autocast runs in (None under fp32): bfloat16, or float16 on a CUDA
        GPU without bfloat16."""
        if self.name == "fp32":
            return None
        if self.device_type == "cuda" and not cuda_has_bf16():
            return "float16"
        return "bfloat16"

    def autocast(self):
        """The context of the training forward (backbone and head), the BatchNorm recalibration
        forward and validation."""
        import torch

        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=getattr(torch, dtype))

    def optimizer_step(self, optimizer) -> Callable:
        """`step(loss)`: backward and optimizer step; under float16 through a GradScaler (small
        gradients underflow in float16, not in bfloat16, whose range is float32's)."""
        if self.autocast_dtype != "float16":
            def step(loss) -> None:
                loss.backward()
                optimizer.step()
            return step
        import torch

        scaler = torch.amp.GradScaler(self.device_type)

        def scaled_step(loss) -> None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return scaled_step

    def record(self) -> dict[str, str | None]:
        """For results.json's provenance: the precision as requested and resolved, and
        autocast's type."""
        return {"requested": self.requested, "resolved": self.name,
                "autocast_dtype": self.autocast_dtype}

    def describe(self) -> str:
        """One line for train.log."""
        why = ""
        if self.requested == "auto":
            native = "has" if self.name == "bf16" else "has no"
            why = f" (auto: this {self.device_type} {native} native bfloat16)"
        if self.name == "fp32":
            return f"training precision fp32{why}"
        return (f"training precision {self.name}{why}: backbone and head under "
                f"{self.device_type} autocast ({self.autocast_dtype}); front end, loss, weights "
                f"and optimizer in float32")


FP32 = TrainingPrecision()
