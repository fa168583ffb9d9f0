"""Resources on legal input and leftovers after a kill: a clip at any rate a file can declare
resamples in bounded memory (training and the torch-free runtime alike, the common rates exactly
as before); a killed run's temporary files, scratch folders and metrics rows are gone after the
next start."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from math import gcd
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from run_helpers import Interrupted, dies_before_committing, small_run_options

from edgecl.audio import load_audio
from edgecl.audio import resample as train_resample
from edgecl.config import RunConfig
from edgecl.leftovers import SCRATCH_NAME, remove_leftovers, scratch_temp_dir
from edgecl.progress import METRICS_NAME
from edgecl.resample_plan import MAX_ERROR_PPM, MAX_KERNEL_TAPS, kernel_taps, plan_resample
from edgecl.run_owner import open_run_folder
from edgecl.trainer import ContinualRun
from firmware_export.device.resample import resample as device_resample
from firmware_export.device.runtime import read_clip

PROJECT_ROOT = Path(__file__).resolve().parent.parent
AWKWARD_RATE = 44_101  # prime: shares no factor with any model rate
COMMON_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000)


def _reduced(orig: int, new: int) -> tuple[int, int]:
    divisor = gcd(orig, new)
    return orig // divisor, new // divisor


def _tone(rate: int, seconds: float, hertz: float = 440.0) -> np.ndarray:
    time = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hertz * time)).astype(np.float32)


# --- the resampler's memory is bounded ---------------------------------------------------------

def test_an_awkward_rate_is_resampled_in_passes_of_bounded_kernels():
    assert kernel_taps(*_reduced(AWKWARD_RATE, 16000)) > 700_000_000  # the one-pass kernel
    plan = plan_resample(AWKWARD_RATE, 16000)
    assert plan.passes and all(kernel_taps(*p) <= MAX_KERNEL_TAPS for p in plan.passes)
    assert 0 < plan.error_ppm < 1


def test_every_rate_a_file_can_declare_gets_bounded_passes_and_a_small_rate_error():
    rng = random.Random(28)
    extremes = [(1, 384_000), (2**31 - 1, 1000), (2**31 - 1, 1), (1, 1000), (384_001, 384_000),
                (16_002, 16_000), (2**31 - 1, 2**31 - 2), (177_306, 177_376)]
    randoms = [(rng.choice([rng.randint(1, 2**31 - 1), rng.randint(1000, 400_000)]),
                rng.choice([rng.randint(1, 384_000), *COMMON_RATES])) for _ in range(1500)]
    for orig, new in extremes + randoms:
        plan = plan_resample(orig, new)
        assert all(kernel_taps(*p) <= MAX_KERNEL_TAPS for p in plan.passes), (orig, new, plan)
        assert plan.error_ppm <= MAX_ERROR_PPM, (orig, new, plan)
        assert len(plan.passes) <= 4, (orig, new, plan)


def test_common_rates_take_one_exact_pass_and_give_torchaudios_bits():
    waveform = np.random.default_rng(0).standard_normal((2, 4801)).astype(np.float32) * 0.3
    for orig in COMMON_RATES:
        for new in COMMON_RATES:
            if orig == new:
                continue
            plan = plan_resample(orig, new)
            assert plan.passes == (_reduced(orig, new),) and plan.exact
            expected = AF.resample(torch.from_numpy(waveform), orig, new).numpy()
            assert np.array_equal(train_resample(waveform, orig, new), expected), (orig, new)
            np.testing.assert_allclose(device_resample(waveform, orig, new), expected,
                                       atol=5e-5, rtol=0)


@pytest.mark.parametrize("orig, new", [(AWKWARD_RATE, 16000), (7, 16000), (16_002, 16_000),
                                       (2**31 - 1, 8000)])
def test_training_and_the_runtime_agree_at_awkward_rates(orig, new):
    waveform = np.random.default_rng(orig % 1000).standard_normal(min(orig, 50_000)).astype(
        np.float32) * 0.3
    trained = train_resample(waveform, orig, new)
    device = device_resample(waveform, orig, new)
    assert trained.shape == device.shape == (-(-waveform.size * new // orig),)
    np.testing.assert_allclose(device, trained, atol=5e-5, rtol=0)


def test_load_audio_at_an_awkward_rate_builds_only_bounded_kernels(tmp_path, monkeypatch):
    path = tmp_path / "awkward.wav"
    sf.write(path, _tone(AWKWARD_RATE, 1.0), AWKWARD_RATE, subtype="FLOAT")
    calls = []
    real = AF.resample

    def spy(waveform, orig, new, *args, **kwargs):
        calls.append((orig, new))
        return real(waveform, orig, new, *args, **kwargs)

    monkeypatch.setattr(AF, "resample", spy)
    wave = load_audio(path, 16000)
    assert calls and all(kernel_taps(*_reduced(o, n)) <= MAX_KERNEL_TAPS for o, n in calls)
    assert wave.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(wave))  # 1 Hz bins: the tone stays at 440 Hz
    assert int(np.argmax(spectrum)) == 440


def test_the_runtime_reads_an_awkward_rate_in_bounded_memory(tmp_path):
    path = tmp_path / "awkward.wav"
    sf.write(path, _tone(AWKWARD_RATE, 1.0), AWKWARD_RATE, subtype="FLOAT")
    tracemalloc.start()
    try:
        wave = read_clip(path, 16000, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20  # one pass of the exact ratio would allocate 5.6 GB
    assert int(np.argmax(np.abs(np.fft.rfft(wave)))) == 440


PEAK_RSS_PROBE = textwrap.dedent("""
    import resource, sys
    import numpy as np, soundfile as sf, torch
    from edgecl.audio import load_audio
    torch.set_num_threads(1)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_audio(sys.argv[1], 16000, 16000)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
""")


def test_training_loads_an_awkward_rate_within_a_small_peak_rss(tmp_path):
    """Measured in a process of its own: the exact one-pass kernel took more than 5 GB."""
    path = tmp_path / "awkward.wav"
    sf.write(path, _tone(AWKWARD_RATE, 2.0), AWKWARD_RATE, subtype="FLOAT")
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_PROBE, str(path)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) < 2**30


# --- leftovers of a kill are removed on the next start -----------------------------------------

def _epochs(run_dir: Path) -> list[tuple[str, str]]:
    with (run_dir / METRICS_NAME).open(newline="") as handle:
        return [(row["phase"], row["epoch"]) for row in csv.DictReader(handle)]


def test_a_resumed_run_removes_what_the_killed_one_left(six_class_manifest, tmp_path,
                                                        monkeypatch):
    options = small_run_options(six_class_manifest, mode="finetune", n_tasks=2, memory_size=0)
    straight = tmp_path / "straight"
    ContinualRun(RunConfig(**options, workspace=str(straight))).run()
    config = RunConfig(**options, workspace=str(tmp_path / "killed"))
    with dies_before_committing(monkeypatch, 1), pytest.raises(Interrupted):
        ContinualRun(config).run()  # phase 1 trained: its epochs are in metrics.csv
    run_dir = tmp_path / "killed" / "run"
    assert ("1", "0") in _epochs(run_dir)
    with (run_dir / METRICS_NAME).open("ab") as handle:
        handle.write(b"1,1,3,0.5")  # a row cut short by the kill
    # What kills at other points leave: writers' temporary files, the export's scratch.
    stale = [run_dir / ".results.json.k1ll3d_x.tmp", run_dir / ".run.json.abcdefgh.tmp",
             run_dir / "phase_0" / ".checkpoint.pt.a1b2c3d4.pt"]
    for path in stale:
        path.write_bytes(b"partial")
    scratch = run_dir / SCRATCH_NAME
    for name in ("edgecl-int8-search-x1", "edgecl-quant-y2", "pre.quant.z3"):
        (scratch / name).mkdir(parents=True)
        (scratch / name / "model.onnx").write_bytes(b"partial")
    kept = [run_dir / ".results.json.keep", run_dir / "phase_0" / "notes.tmp"]  # not a writer's
    for path in kept:
        path.write_bytes(b"mine")

    results = ContinualRun(config).run()
    assert results["complete"]
    assert not any(path.exists() for path in stale) and not scratch.exists()
    assert all(path.read_bytes() == b"mine" for path in kept)
    assert _epochs(run_dir) == _epochs(straight / "run")
    assert len(set(_epochs(run_dir))) == len(_epochs(run_dir))


def test_a_run_killed_before_any_commit_keeps_no_metrics_rows(six_class_manifest, tmp_path,
                                                              monkeypatch):
    options = small_run_options(six_class_manifest, mode="finetune", n_tasks=2, memory_size=0)
    config = RunConfig(**options, workspace=str(tmp_path))
    with dies_before_committing(monkeypatch, 0), pytest.raises(Interrupted):
        ContinualRun(config).run()
    assert _epochs(tmp_path / "run")
    ContinualRun(config).run()
    epochs = _epochs(tmp_path / "run")
    assert len(set(epochs)) == len(epochs) and {p for p, _ in epochs} == {"0", "1"}


def test_stale_temporaries_are_left_alone_outside_a_run_folder(tmp_path):
    """A folder that holds no run.json is not a run's: only a temporary of run.json goes."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".results.json.abcdefgh.tmp").write_bytes(b"x")
    (folder / ".run.json.abcdefgh.tmp").write_bytes(b"x")
    with pytest.raises(Exception, match="not from a run"):
        open_run_folder(folder, {"a": 1})
    assert (folder / ".results.json.abcdefgh.tmp").exists()
    assert not (folder / ".run.json.abcdefgh.tmp").exists()


def test_scratch_takes_every_default_temporary_folder_and_gives_it_back(tmp_path):
    before = tempfile.gettempdir()
    with scratch_temp_dir(tmp_path) as scratch:
        assert scratch == tmp_path / SCRATCH_NAME
        with tempfile.TemporaryDirectory(prefix="pre.quant.") as folder:  # as onnxruntime does
            assert Path(folder).parent == scratch
        inner = tmp_path / "other"
        inner.mkdir()
        with scratch_temp_dir(inner):
            assert Path(tempfile.mkdtemp()).parent == inner / SCRATCH_NAME
        assert tempfile.gettempdir() == str(scratch)
    assert tempfile.gettempdir() == before
    assert not scratch.exists()  # empty at the end: removed
    assert (inner / SCRATCH_NAME).exists()  # a leftover: the run's next start removes it
    remove_leftovers(inner)
    assert not (inner / SCRATCH_NAME).exists()


def test_the_export_of_a_phase_makes_its_temporary_folders_in_the_run_folder(tmp_path,
                                                                            monkeypatch):
    import firmware_export.run_export as run_export
    from edgecl.data.records import Clip
    from edgecl.tasks import LabelledClip, Task

    seen = []
    monkeypatch.setattr(run_export, "export_phase",
                        lambda *args, **kwargs: seen.append(tempfile.gettempdir()) or {})
    clip = Clip(path=tmp_path / "a.wav", label="a", split="train", fold=1)
    task = Task(index=0, classes=["a"], train=[LabelledClip(clip, 0)], val=[],
                test=[LabelledClip(clip, 0)])
    run_export.export_seen_tasks(None, tmp_path / "run" / "phase_0", phase=0, classes=["a"],
                                 seen_tasks=[task], waveform=lambda clip: np.zeros(8, np.float32))
    assert seen == [str(tmp_path / "run" / SCRATCH_NAME)]


KILLED_IN_SCRATCH = textwrap.dedent("""
    import os, signal, sys, tempfile
    from edgecl.leftovers import scratch_temp_dir
    with scratch_temp_dir(sys.argv[1]):
        for prefix in ("edgecl-int8-search-", "edgecl-quant-", "pre.quant."):
            folder = tempfile.mkdtemp(prefix=prefix)
            open(os.path.join(folder, "model.onnx"), "wb").write(b"partial")
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_during_export_leaves_nothing_in_the_system_temp_folder(tmp_path):
    run_dir, system_temp = tmp_path / "run", tmp_path / "tmp"
    run_dir.mkdir()
    system_temp.mkdir()
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_SCRATCH, str(run_dir)],
                            cwd=PROJECT_ROOT, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT),
                                 "TMPDIR": str(system_temp)})
    assert killed.returncode == -signal.SIGKILL
    assert list(system_temp.iterdir()) == []
    assert len(list((run_dir / SCRATCH_NAME).iterdir())) == 3
    (run_dir / "run.json").write_text(json.dumps({"config": {"a": 1}}))
    folder = open_run_folder(run_dir, {"a": 1})  # the next start, under the run's lock
    try:
        assert not (run_dir / SCRATCH_NAME).exists()
    finally:
        folder.release()


def _train_with_export(manifest: Path, workspace: Path) -> list[str]:
    return [sys.executable, "-m", "edgecl", "train", "--dataset", "manifest", "--data-root",
            str(manifest), "--width", "8", "--epochs", "1", "--batch-size", "8", "--n-tasks",
            "2", "--n-init-cls", "2", "--n-cls-a-task", "2", "--mode", "finetune", "--seed", "5",
            "--threads", "1", "--quiet", "--workspace", str(workspace), "--exp-name", "run"]


@pytest.mark.slow
def test_a_run_killed_in_its_int8_search_leaves_nothing_after_its_rerun(six_class_manifest,
                                                                       tmp_path):
    system_temp = tmp_path / "tmp"
    system_temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TMPDIR": str(system_temp)}
    command = _train_with_export(six_class_manifest, tmp_path / "ws")
    run_dir = tmp_path / "ws" / "run"
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env)
    try:
        deadline = time.monotonic() + 300
        while not any((run_dir / SCRATCH_NAME).glob("edgecl-quant-*")):  # quantizing
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert any((run_dir / SCRATCH_NAME).iterdir())
    rerun = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((run_dir / "results.json").read_text())["complete"]
    assert not (run_dir / SCRATCH_NAME).exists()
    assert [p for p in run_dir.rglob(".*") if p.name != ".lock"] == []
    # torch keeps its compile cache (torchinductor_<user>) there by design: not scratch
    assert [p.name for p in system_temp.iterdir()
            if p.name.startswith(("edgecl-", "pre.quant.", "ort.quant.", "tmp"))] == []
    epochs = _epochs(run_dir)
    assert len(set(epochs)) == len(epochs)
