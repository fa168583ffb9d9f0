"""--target on the command line and in the run config, and the one-line errors around it; no
converter stack needed."""

from __future__ import annotations

from importlib import metadata

import pytest
from click.testing import CliRunner

from edgecl.cli import main
from edgecl.config import RunConfig
from edgecl.errors import EdgeclError


def test_the_default_target_leaves_a_runs_identity_as_before_the_option():
    default, tflm = RunConfig(), RunConfig(target="tflm")
    assert "target" not in default.identity()
    assert tflm.identity()["target"] == "tflm"
    assert default.identity_hash() != tflm.identity_hash()
    assert RunConfig.from_dict(default.to_dict()).target == "onnx"


def test_an_unknown_target_is_refused():
    with pytest.raises(EdgeclError, match="--target: expected one of onnx, tflm"):
        RunConfig(target="coreml")


def test_target_tflm_without_export_is_a_one_line_error(tiny_manifest, tmp_path):
    result = CliRunner().invoke(main, [
        "train", "--dataset", "manifest", "--data-root", str(tiny_manifest), "--workspace",
        str(tmp_path), "--width", "8", "--epochs", "1", "--no-export", "--target", "tflm",
        "--quiet"])
    assert result.exit_code == 2
    assert result.output == ("edgecl: error: --target tflm: only used with --export (this run "
                             "is --no-export)\n")
    assert not any(tmp_path.iterdir())


def test_a_missing_converter_package_is_named(monkeypatch):
    from firmware_export.tflm import require_toolchain

    real = metadata.version

    def version(name):
        if name == "ai-edge-quantizer":
            raise metadata.PackageNotFoundError(name)
        return real(name) if name != "litert-torch" else "0"

    monkeypatch.setattr(metadata, "version", version)
    with pytest.raises(EdgeclError, match=r"ai-edge-quantizer is not installed; install the "
                                          r"optional extra with pip install 'edgecl\[tflm\]'"):
        require_toolchain()


def _bundle_without_tflm(folder):
    from firmware_export.bundle_folder import write_bundle

    write_bundle(folder, {"labels.json": b'["a"]\n'}, {"format": 2, "classes": ["a"]})


@pytest.mark.parametrize("extra, message", [
    ([], "has no TFLM build; export it with --target tflm"),
    (["--bare"], "--bare: not used with --target tflm"),
])
def test_infer_target_tflm_errors_are_one_line(tmp_path, extra, message):
    _bundle_without_tflm(tmp_path / "phase_0")
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", *extra,
                                       str(tmp_path / "phase_0"), "clip.wav"])
    assert result.exit_code == 2
    assert message in result.output and result.output.count("\n") == 1


def test_infer_target_tflm_needs_a_bundle_folder(tmp_path):
    model = tmp_path / "model.tflm.tflite"
    model.write_bytes(b"x")
    result = CliRunner().invoke(main, ["infer", "--target", "tflm", str(model), "clip.wav"])
    assert result.exit_code == 2
    assert "--target tflm needs a bundle folder" in result.output


def test_reexport_defaults_to_the_runs_own_target(tmp_path, monkeypatch):
    import json

    from export_helpers import trained_model
    from test_export import _write_tone_run

    import firmware_export.run_export as run_export

    run, _ = _write_tone_run(tmp_path, trained_model())
    results = json.loads((run / "results.json").read_text())
    results["config"]["target"] = "tflm"
    (run / "results.json").write_text(json.dumps(results))
    asked = []
    monkeypatch.setattr(run_export, "export_seen_tasks",
                        lambda *args, target, **kwargs: asked.append(target) or {})
    run_export.reexport_run(run)
    run_export.reexport_run(run, target="onnx")
    assert asked == ["tflm", "onnx"]
