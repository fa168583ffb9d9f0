"""Compile the generated C99 log-mel front end with the system C compiler and run it on clips:
shared by the front-end and TFLM bundle tests (they skip when no compiler is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

MAIN = r"""
#include <stdio.h>
#include "logmel.h"

static float waveform[EDGECL_LOGMEL_CLIP_SAMPLES];
static float features[EDGECL_LOGMEL_SIZE];

/* float32 clips on stdin, one after another; their log-mels on stdout. */
int main(void) {
  while (fread(waveform, sizeof(float), EDGECL_LOGMEL_CLIP_SAMPLES, stdin) ==
         EDGECL_LOGMEL_CLIP_SAMPLES) {
    edgecl_logmel(waveform, features);
    fwrite(features, sizeof(float), EDGECL_LOGMEL_SIZE, stdout);
  }
  return 0;
}
"""


def compiler() -> str:
    """The system C compiler, or skip the test."""
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no C compiler (cc, gcc or clang) on this machine")


def compile_c99(folder: Path, name: str, header: str | bytes, source: str | bytes, main: str,
                what: str) -> Path:
    """Write NAME.h, NAME.c and main.c in `folder` and compile them (strict C99, warnings as
    errors) into the binary `folder/NAME`; a failure names `what` and shows the compiler's
    message."""
    for path, text in ((folder / f"{name}.h", header), (folder / f"{name}.c", source),
                       (folder / "main.c", main)):
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    binary = folder / name
    result = subprocess.run([compiler(), "-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
                             "-O2", "-o", str(binary), str(folder / "main.c"),
                             str(folder / f"{name}.c"), "-lm"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{what} does not compile:\n{result.stderr}"
    return binary


def build(folder: Path, header: str, source: str) -> Path:
    """Compile logmel.h/logmel.c with a stdin/stdout main."""
    return compile_c99(folder, "logmel", header, source, MAIN, "the generated front end")


def run(binary: Path, clips: np.ndarray, n_mels: int, frames: int) -> np.ndarray:
    """Log-mels [clips, n_mels, frames] computed by the compiled front end."""
    result = subprocess.run([str(binary)], input=np.ascontiguousarray(clips, np.float32).tobytes(),
                            capture_output=True, check=True, timeout=120)
    return np.frombuffer(result.stdout, dtype=np.float32).reshape(len(clips), n_mels, frames)
