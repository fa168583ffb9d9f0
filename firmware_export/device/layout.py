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
BUNDLE_FILES = (MODEL_FP32, MODEL_INT8, LABELS, C_HEADER)  # model.int8.onnx only when it ships

# Graph input and output names.
INPUT_NAME = "waveform"
OUTPUT_NAME = "logits"

# Keys of the ONNX metadata_props that make a lone model file self-describing.
META_LABELS = "edgecl.labels"
META_SAMPLE_RATE = "edgecl.sample_rate"
META_CLIP_SAMPLES = "edgecl.clip_samples"

MANIFEST_FORMAT = 2  # 2: per-artifact verdicts ("artifacts"), "device_model"
