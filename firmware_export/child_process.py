"""What the exporter's child processes share: a one-worker pool started by the spawn method (the
child shares nothing with this process, so what its libraries load or leave is handed back when it
ends), the model sent to it whole, and a failure told in one line."""

from __future__ import annotations

import io
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch
from torch import nn

from edgecl.errors import EdgeclError

Answer = TypeVar("Answer")


def spawned_pool() -> ProcessPoolExecutor:
    """One spawned worker with this process's thread count and temporary folder."""
    return ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=start_child,
                               initargs=(torch.get_num_threads(), tempfile.gettempdir()))


def start_child(threads: int, temp_dir: str) -> None:
    """The child's set-up: the parent's thread count and temporary folder (the run's scratch
    folder during an export, edgecl.leftovers.scratch_temp_dir)."""
    torch.set_num_threads(threads)
    tempfile.tempdir = temp_dir


def model_bytes(model: nn.Module) -> bytes:
    """The model pickled whole by torch (the child rebuilds the same module, weights included)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    return buffer.getvalue()


def loaded_model(data: bytes) -> nn.Module:
    """The module model_bytes() pickled."""
    return torch.load(io.BytesIO(data), weights_only=False)


def child_answer(pool: ProcessPoolExecutor, work: str, failure: type[Exception],
                 function: Callable[..., Answer], *arguments: Any) -> Answer:
    """function(*arguments) run by `pool`'s child; a child that fails or dies is one `failure`
    line naming `work`."""
    try:
        return pool.submit(function, *arguments).result()
    except BrokenProcessPool:
        raise failure(ended_without_answer(work)) from None
    except EdgeclError as error:
        raise failure(one_line(error)) from error
    except Exception as error:  # noqa: BLE001 - any failure of the child is one clear line
        raise failure(f"{work} failed in its child process: {type(error).__name__}: "
                      f"{one_line(error)}") from error


def ended_without_answer(work: str) -> str:
    """The one line for a child that died: what can kill it, and the spawn method's one demand
    on a calling script (a top level the child re-runs on import would start it again)."""
    return (f"{work}: its child process ended without an answer (killed, out of memory, or a "
            f"script calling the export without an `if __name__ == \"__main__\":` guard)")


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300]
