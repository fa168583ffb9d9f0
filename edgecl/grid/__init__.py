"""`edgecl grid`: a grid of `edgecl train` runs from a TOML spec, on Ray or local threads.

spec.py expands a spec into trials with collision-free run-folder names; runner.py skips complete
runs, retries failures once and records everything in WORKSPACE/grid.json; executors.py runs the
trials as Ray tasks or local threads; progress.py prints done / running / failed and an ETA.
"""
