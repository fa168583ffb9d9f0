"""Compile a bundle's generated rls.c with the system C compiler and drive it with a stream of
learn / forget / predict commands: shared by the C update's tests and its drift benchmark."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from c_frontend_harness import compile_c99

LEARN, FORGET, PREDICT, REMOVE = 0, 1, 2, 3

MAIN = r"""
#include <stdio.h>
#include <stdlib.h>
#include "rls.h"

static unsigned char blob[EDGECL_RLS_STATE_BYTES + 1];

/* argv[1] (optional): a state blob loaded first; argv[2] (optional): where the state is stored
 * at the end. Records on stdin: int op, int label, float weight, float embedding[DIM].
 * op 0 learn, 1 forget, 2 predict (logits out), 3 remove the class.
 * At the end: int classes, R packed, W [FEATURES][MAX_CLASSES]. */
int main(int argc, char **argv) {
  int head[2];
  float weight, embedding[EDGECL_RLS_DIM], logits[EDGECL_RLS_MAX_CLASSES];
  int code = 0;
  if (argc > 1) {
    FILE *file = fopen(argv[1], "rb");
    size_t n;
    if (file == NULL) return 5;
    n = fread(blob, 1, sizeof blob, file);
    fclose(file);
    code = edgecl_rls_load(blob, (unsigned long)n);
    if (code != 0) { fprintf(stderr, "load: code %d\n", code); return 6; }
  }
  while (fread(head, sizeof(int), 2, stdin) == 2) {
    if (fread(&weight, sizeof(float), 1, stdin) != 1 ||
        fread(embedding, sizeof(float), EDGECL_RLS_DIM, stdin) != EDGECL_RLS_DIM) return 3;
    if (head[0] == 0) code = edgecl_rls_learn(embedding, head[1], weight);
    else if (head[0] == 1) code = edgecl_rls_forget(embedding, head[1], weight);
    else if (head[0] == 3) code = edgecl_rls_remove_class(head[1]);
    else {
      edgecl_rls_predict(embedding, logits);
      fwrite(logits, sizeof(float), (size_t)edgecl_rls_classes(), stdout);
    }
    if (code != 0) { fprintf(stderr, "op %d label %d: code %d\n", head[0], head[1], code);
                     return 4; }
  }
  code = edgecl_rls_classes();
  fwrite(&code, sizeof(int), 1, stdout);
  fwrite(edgecl_rls_r(), sizeof(float), EDGECL_RLS_PACKED, stdout);
  fwrite(edgecl_rls_w(), sizeof(float), EDGECL_RLS_FEATURES * EDGECL_RLS_MAX_CLASSES, stdout);
  if (argc > 2) {
    FILE *file = fopen(argv[2], "wb");
    if (file == NULL) return 5;
    edgecl_rls_store(blob, 7);
    fwrite(blob, 1, EDGECL_RLS_STATE_BYTES, file);
    fclose(file);
  }
  return 0;
}
"""


def build(folder: Path, header: bytes, source: bytes) -> Path:
    """Compile rls.h/rls.c with the stdin/stdout main."""
    return compile_c99(folder, "rls", header, source, MAIN, "the generated rls.c")


def record(op: int, label: int, weight: float, embedding: np.ndarray) -> bytes:
    return (np.asarray([op, label], np.int32).tobytes() + np.float32(weight).tobytes()
            + np.asarray(embedding, np.float32).tobytes())


def run(binary: Path, records: list[bytes], dim: int, class_limit: int,
        load: Path | None = None, store: Path | None = None
        ) -> tuple[bytes, int, np.ndarray, np.ndarray]:
    """(predict outputs, classes, R packed, W [dim + 1, class_limit]) after the stream; `load`:
    a state blob loaded first, `store`: where the state is stored after it (version 7)."""
    paths = [str(path) for path in (load, store) if path is not None]
    if store is not None and load is None:
        raise ValueError("store needs load (the main's arguments are positional)")
    result = subprocess.run([str(binary), *paths], input=b"".join(records), capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    packed = (dim + 1) * (dim + 2) // 2
    tail = 4 + 4 * (packed + (dim + 1) * class_limit)
    out, state = result.stdout[:-tail], result.stdout[-tail:]
    classes = int(np.frombuffer(state[:4], np.int32)[0])
    floats = np.frombuffer(state[4:], np.float32)
    return out, classes, floats[:packed], floats[packed:].reshape(dim + 1, class_limit)
