"""Device artifacts: ONNX and int8 builds, parity checks, bundle manifests, and a torch-free runtime."""
