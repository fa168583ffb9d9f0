"""Device targets of an export: onnx (fp32 and int8 ONNX, always built) and tflm (adds the
TensorFlow Lite Micro build). The run config's vocabulary, read by firmware_export."""

TARGETS = ("onnx", "tflm")
