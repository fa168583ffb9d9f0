"""What runs beside a shipped bundle: verify it, read its layout, prepare audio, run the model.

Every module here imports numpy, soundfile, onnxruntime and edgecl's torch-free helpers only
(edgecl.errors, edgecl.audio's reader), never torch: a test imports them with torch blocked.
"""
