"""Names shared by the exporter and the torch-free runtime: bundle files, graph I/O, model metadata.

Kept free of heavy imports so firmware_export.device.runtime can use it on a machine without torch.
"""

from __future__ import annotations

# Files of a phase bundle (WORKSPACE/EXP/phase_<i>/).
MODEL_FP32 = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
LABELS = "labels.json"
C_HEADER = "model.h"
MANIFEST = "manifest.json"
# The TFLM build (`--target tflm`, firmware_export.tflm), all five only when it ships.
MODEL_TFLM = "model.tflm.tflite"
TFLM_HEADER = "model_tflm.h"
FRONTEND_HEADER = "logmel.h"
FRONTEND_SOURCE = "logmel.c"
TFLM_TEST_VECTORS = "tflm_test_vectors.h"
TFLM_FILES = (MODEL_TFLM, TFLM_HEADER, FRONTEND_HEADER, FRONTEND_SOURCE, TFLM_TEST_VECTORS)
# Its embedding model (the int8 model cut before its classifier: a float head in C runs on it,
# the learnt one once the bundle has learnt), shipped with the build when it meets the same rule.
MODEL_TFLM_EMBEDDING = "model.embedding.tflm.tflite"
TFLM_EMBEDDING_HEADER = "model_embedding_tflm.h"
TFLM_EMBEDDING_FILES = (MODEL_TFLM_EMBEDDING, TFLM_EMBEDDING_HEADER)
# The analytic head (firmware_export.device.learn): the fp32 model without its head (waveform ->
# embedding), the head's state once fit, and the learnt device model (embedding + analytic head)
# with the head's update in C once a bundle has learnt.
MODEL_EMBEDDING = "model.embedding.onnx"
ANALYTIC_STATE = "analytic.json"
MODEL_ANALYTIC = "model.analytic.onnx"
RLS_HEADER = "rls.h"
RLS_SOURCE = "rls.c"
# The head's state as the C update loads it (edgecl_rls_load), in bundles with a TFLM embedding.
RLS_STATE = "rls_state.bin"
ANALYTIC_FILES = (MODEL_EMBEDDING, ANALYTIC_STATE, MODEL_ANALYTIC, RLS_HEADER, RLS_SOURCE,
                  RLS_STATE)
# model.int8.onnx only when it ships
BUNDLE_FILES = (MODEL_FP32, MODEL_INT8, LABELS, C_HEADER, *TFLM_FILES, *TFLM_EMBEDDING_FILES,
                *ANALYTIC_FILES)

# Builds that missed their rule, kept for diagnosis beside the bundle's files (never listed in
# the manifest, never loaded by infer): WITHHELD_DIR/<artifact>/ holds the model file and
# WITHHELD_REPORT (why, the parity figures, and for int8 the per-layer error report).
WITHHELD_DIR = "withheld"
WITHHELD_REPORT = "withheld.json"

# Graph input and output names.
INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"
EMBEDDING_NAME = "embedding"

# Keys of the ONNX metadata_props that make a lone model file self-describing.
META_LABELS = "edgecl.labels"
META_SAMPLE_RATE = "edgecl.sample_rate"
META_CLIP_SAMPLES = "edgecl.clip_samples"

MANIFEST_FORMAT = 2  # 2: per-artifact verdicts ("artifacts"), "device_model"
