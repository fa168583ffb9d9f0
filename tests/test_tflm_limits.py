"""The TFLM deployment budget (firmware_export.tflm.limits): --arena-limit and --flash-limit are
checked before training on the untrained architecture, with the levers that would fit named with
their figures. The probe is replaced by a model of its figures here (arena grows with mels,
window and width; flatbuffer with width); tests/test_tflm_build.py holds real builds to limits."""

from __future__ import annotations

import pytest

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from firmware_export.tflm.limits import (
    DeviceLimits,
    check_before_training,
    check_run_limits,
    limit_failures,
    sixteen_bit_note,
)


def fake_probe(sample_rate, clip_seconds, width, *, n_classes, n_mels, model_name,
               recipe="int8"):
    """Arena proportional to mels x frames x width (twice that in 16-bit activations),
    flatbuffer to width (and classes)."""
    frames = round(clip_seconds * 100)
    bytes_per_value = 1 if recipe == "int8" else 2
    return {"arena_bytes": n_mels * frames * width * bytes_per_value,
            "flatbuffer_bytes": 5000 * width + n_classes}


def _check(limits, **overrides):
    arguments = dict(sample_rate=16000, window_samples=16000, n_mels=64, width=40, n_classes=10,
                     probe=fake_probe)
    arguments.update(overrides)
    return check_before_training(limits, **arguments)


def test_a_configuration_that_fits_returns_its_figures():
    assert _check(DeviceLimits(arena=256_000, flash=1_000_000)) == {
        "arena_bytes": 64 * 100 * 40, "flatbuffer_bytes": 200_010}


def test_a_configuration_over_the_arena_names_the_levers_with_their_figures():
    with pytest.raises(EdgeclError) as raised:
        _check(DeviceLimits(arena=200_000))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("arena 256 KB over --arena-limit 200 KB: the untrained bc-resnet "
                              "of width 40 at 16000 Hz, 64 mels, 1 s windows, 10 classes needs "
                              "256 KB arena")
    assert "--n-mels 32 (128 KB arena, 200 KB flatbuffer)" in message
    assert "--tflm-window-seconds 0.5 (128 KB arena" in message
    assert "--width 20 (128 KB arena, 100 KB flatbuffer)" in message


def test_a_lever_that_does_not_fit_either_says_so():
    with pytest.raises(EdgeclError, match=r"--n-mels 32 \(128 KB arena, 200 KB flatbuffer, "
                                          r"still over\).*--width 20 \(128 KB arena, 100 KB "
                                          r"flatbuffer\)"):
        _check(DeviceLimits(flash=150_000))


def test_a_16_bit_build_over_the_limits_is_a_warning_with_the_window_that_fits():
    arguments = dict(sample_rate=16000, window_samples=16000, n_mels=64, width=40, n_classes=10,
                     probe=fake_probe)
    # int8 needs 256 KB, 16-bit activations 512 KB: only the int8 build fits 300 KB.
    limits = DeviceLimits(arena=300_000)
    assert _check(limits)["arena_bytes"] == 256_000
    assert sixteen_bit_note(limits, **arguments) == (
        "in 16-bit activations (16x8-int8-input, the recipe after int8) it needs 512 KB arena, "
        "so a phase whose int8 build misses the parity rule will withhold its TFLM build "
        "(--tflm-window-seconds 0.5: 256 KB arena in 16-bit activations)")
    assert sixteen_bit_note(DeviceLimits(arena=600_000), **arguments) is None
    # no window down to 1/8 s fits: the warning names none
    assert sixteen_bit_note(DeviceLimits(arena=50_000), **arguments).endswith(
        "will withhold its TFLM build")


def test_limit_failures_name_each_limit_passed():
    assert limit_failures(100, 100, DeviceLimits(arena=100, flash=100)) == []
    assert limit_failures(101, 50, DeviceLimits(arena=100)) == [
        "arena 101 B over --arena-limit 100 B"]
    assert limit_failures(10**9, 10**9, None) == []


def test_limits_are_byte_sizes_and_need_the_tflm_target():
    config = RunConfig(target="tflm", arena_limit="256KiB", flash_limit="1MB")
    assert (config.arena_limit, config.flash_limit) == (262_144, 1_000_000)
    with pytest.raises(EdgeclError, match=r"^--arena-limit: only used with --target tflm$"):
        RunConfig(arena_limit="256KB")
    with pytest.raises(EdgeclError, match=r"^--flash-limit: expected a byte size"):
        RunConfig(target="tflm", flash_limit="lots")
    assert "arena_limit" not in RunConfig().identity()  # older runs keep their identity


def test_a_part_sets_the_limits_that_are_not_given():
    from edgecl.targets import PARTS

    arena, flash = PARTS["nrf52840"]
    assert (arena, flash) == (256 * 1024, 1024 * 1024)
    config = RunConfig(target="tflm", part="nrf52840")
    assert (config.arena_limit, config.flash_limit) == (arena, flash)
    # an explicit limit overrides the part's own; the limits, not the name, are the identity
    config = RunConfig(target="tflm", part="nrf52840", arena_limit="200KiB")
    assert (config.arena_limit, config.flash_limit) == (200 * 1024, flash)
    assert RunConfig(target="tflm", part="nrf52840").identity() == RunConfig(
        target="tflm", arena_limit=f"{arena}", flash_limit=f"{flash}").identity()
    with pytest.raises(EdgeclError, match=r"^--part: expected one of nrf52840, .*, got 'm0'$"):
        RunConfig(target="tflm", part="m0")
    with pytest.raises(EdgeclError, match=r"^--part: only used with --target tflm$"):
        RunConfig(part="nrf52840")


def test_export_takes_a_part_with_explicit_limits_first(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from edgecl.cli import main

    given = {}

    def recording(run_dir, phase, **kwargs):
        given.update(kwargs["limits"].describe())
        return []

    monkeypatch.setattr("firmware_export.run_export.reexport_run", recording)
    monkeypatch.setattr("firmware_export.tflm.require_toolchain", lambda: None)
    result = CliRunner().invoke(main, ["export", str(tmp_path), "--target", "tflm", "--part",
                                       "stm32f746", "--flash-limit", "512KiB"])
    assert result.exit_code == 0, result.output
    assert given == {"arena_bytes": 320 * 1024, "flatbuffer_bytes": 512 * 1024}


def test_a_run_checks_its_window_and_largest_head(monkeypatch):
    seen = {}

    def recording_probe(sample_rate, clip_seconds, width, **kwargs):
        seen.update(sample_rate=sample_rate, clip_seconds=clip_seconds, width=width, **kwargs)
        return fake_probe(sample_rate, clip_seconds, width, **kwargs)

    monkeypatch.setattr("firmware_export.tflm.probe.probe", recording_probe)
    config = RunConfig(target="tflm", arena_limit="1MB", n_mels=32, width=16)
    found = check_run_limits(config, 44100, 5 * 44100, n_classes=50)
    # auto window: 1 s of a 5 s clip; the head of every class the run will learn (the last
    # probe is the 16-bit one's)
    assert seen == {"sample_rate": 44100, "clip_seconds": 1.0, "width": 16, "n_classes": 50,
                    "n_mels": 32, "model_name": "bc-resnet", "recipe": "16x8-int8-input"}
    assert found["arena_bytes"] == 32 * 100 * 16
    assert check_run_limits(RunConfig(target="tflm"), 44100, 44100, n_classes=50) is None


def test_train_refuses_a_run_that_cannot_fit_before_writing_its_folder(tiny_manifest, tmp_path,
                                                                        monkeypatch):
    from edgecl.trainer import train

    monkeypatch.setattr("firmware_export.tflm.probe.probe", fake_probe)
    config = RunConfig(dataset="manifest", data_root=str(tiny_manifest),
                       workspace=str(tmp_path / "ws"), width=8, epochs=1, n_tasks=2,
                       n_init_cls=2, n_cls_a_task=2, memory_size=4, target="tflm",
                       arena_limit="100B", quiet=True, threads=1)
    with pytest.raises(EdgeclError, match=r"^arena .* over --arena-limit 100 B: .* at 8000 Hz, "
                                          r"64 mels, 1 s windows, 4 classes needs"):
        train(config)
    assert not (tmp_path / "ws" / config.name).exists()


def test_train_logs_the_budget_with_the_16_bit_warning(tiny_manifest, tmp_path, monkeypatch):
    from edgecl.trainer import ContinualRun, train

    class Stop(Exception):
        """Ends the run once its header is in the log."""

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr("firmware_export.tflm.probe.probe", fake_probe)
    monkeypatch.setattr(ContinualRun, "run_phase", stop)
    # int8 needs 51,200 B at 64 mels, 1 s windows, width 8; 16-bit activations twice that
    config = RunConfig(dataset="manifest", data_root=str(tiny_manifest),
                       workspace=str(tmp_path / "ws"), width=8, epochs=1, n_tasks=2,
                       n_init_cls=2, n_cls_a_task=2, memory_size=4, target="tflm",
                       arena_limit="60000B", quiet=True, threads=1)
    with pytest.raises(Stop):
        train(config)
    log = (tmp_path / "ws" / config.name / "train.log").read_text()
    assert ("deployment budget: the untrained model needs 51.2 KB arena" in log
            and "in 16-bit activations (16x8-int8-input, the recipe after int8) it needs 102 KB "
                "arena" in log and "(--tflm-window-seconds 0.5: 51.2 KB arena" in log)
