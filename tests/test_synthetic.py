"""The embedded synthetic dataset: deterministic for a seed, complete on disk, loadable, sane."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from fixtures_audio import tiny_synthetic

from edgecl.audio import load_audio
from edgecl.cli import main
from edgecl.data import load_dataset
from edgecl.data.sounds import FAMILIES
from edgecl.data.synthetic import (
    CLASSES,
    dataset_folder,
    generate_synthetic,
    load_synthetic,
    synthesise_clip,
)
from edgecl.errors import EdgeclError


def _file_bytes(folder):
    return {str(path.relative_to(folder)): path.read_bytes()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _centroid(clip):
    power = np.abs(np.fft.rfft(clip)) ** 2
    return float((power * np.fft.rfftfreq(clip.size, 1 / 16000)).sum() / power.sum())


def test_at_least_ten_parametric_families():
    assert len(CLASSES) >= 10 and CLASSES == sorted(FAMILIES)


def test_clip_is_deterministic_for_its_key_and_varies_otherwise():
    for class_index in range(len(CLASSES)):
        clip = synthesise_clip(7, class_index, "train", 0)
        assert clip.dtype == np.float32 and clip.shape == (16000,)
        assert np.isfinite(clip).all() and 0.05 < np.abs(clip).max() <= 0.9
        np.testing.assert_array_equal(clip, synthesise_clip(7, class_index, "train", 0))
        assert not np.array_equal(clip, synthesise_clip(8, class_index, "train", 0))
        assert not np.array_equal(clip, synthesise_clip(7, class_index, "train", 1))
        assert not np.array_equal(clip, synthesise_clip(7, class_index, "test", 0))


def test_same_seed_writes_identical_bytes_and_another_seed_differs(tmp_path):
    first = generate_synthetic(tmp_path / "a", seed=1, clips_per_class=3)
    second = generate_synthetic(tmp_path / "b", seed=1, clips_per_class=3)
    other = generate_synthetic(tmp_path / "c", seed=2, clips_per_class=3)
    first_bytes = _file_bytes(first)
    assert len([name for name in first_bytes if name.endswith(".wav")]) == 3 * len(CLASSES)
    assert first_bytes == _file_bytes(second)
    other_bytes = _file_bytes(other)
    assert other.name != first.name
    assert all(other_bytes[name] != data for name, data in first_bytes.items()
               if name.endswith(".wav"))


def test_complete_folder_is_reused_and_no_staging_is_left(tmp_path):
    folder = generate_synthetic(tmp_path, seed=0, clips_per_class=2)
    assert folder == dataset_folder(tmp_path, seed=0, clips_per_class=2)
    stamp = (folder / "manifest.csv").stat().st_mtime_ns
    marker = folder / "audio" / "bell" / "bell-train-0000.wav"
    marker.write_bytes(b"kept")  # a rewrite would replace it
    assert generate_synthetic(tmp_path, seed=0, clips_per_class=2) == folder
    assert marker.read_bytes() == b"kept"
    assert (folder / "manifest.csv").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "data").iterdir()] == [folder.name]


def test_more_clips_per_class_only_adds_clips(tmp_path):
    small = load_synthetic(tmp_path, seed=0, clips_per_class=2)
    large = load_synthetic(tmp_path, seed=0, clips_per_class=5)
    small_train = {c.path.name: c.path.read_bytes() for c in small.train}
    large_train = {c.path.name: c.path.read_bytes() for c in large.train}
    assert small_train and all(large_train[name] == data for name, data in small_train.items())


def test_tiny_dataset_loads_through_the_manifest_loader(tmp_path):
    split = tiny_synthetic(tmp_path, clips_per_class=5)
    assert split.name == "synthetic" and split.classes == CLASSES
    assert (split.sample_rate, split.clip_seconds, split.clip_samples) == (16000, 1.0, 16000)
    assert split.counts("train") == {name: 4 for name in CLASSES}
    assert split.counts("test") == {name: 1 for name in CLASSES}
    wave = load_audio(split.test[0].path, split.sample_rate, split.clip_samples)
    label_index = CLASSES.index(split.test[0].label)
    # The 16-bit file holds the synthesised clip to within quantisation.
    index = int(split.test[0].path.stem.rsplit("-", 1)[1])
    np.testing.assert_allclose(wave, synthesise_clip(0, label_index, "test", index),
                               atol=1 / 2 ** 15)
    again = load_dataset("synthetic", None, workspace=tmp_path, clips_per_class=5)
    assert again.train == split.train


def test_classes_differ_in_a_simple_statistic():
    # Low, rumbling classes sit below bright, crackling ones in spectral centroid.
    low = [_centroid(synthesise_clip(0, CLASSES.index(n), "train", i))
           for n in ("engine", "wind") for i in range(6)]
    high = [_centroid(synthesise_clip(0, CLASSES.index(n), "train", i))
            for n in ("glass", "rain") for i in range(6)]
    assert np.median(low) * 2 < np.median(high)


def test_bad_generator_options_are_errors(tmp_path):
    with pytest.raises(EdgeclError, match="--clips-per-class"):
        generate_synthetic(tmp_path, clips_per_class=1)
    with pytest.raises(EdgeclError, match="test fraction"):
        generate_synthetic(tmp_path, clips_per_class=4, test_fraction=0.0)


def test_data_generate_command_writes_then_reuses(tmp_path):
    runner = CliRunner()
    args = ["data", "generate", "--workspace", str(tmp_path), "--seed", "3",
            "--clips-per-class", "2"]
    first = runner.invoke(main, args)
    assert first.exit_code == 0, first.output
    folder = dataset_folder(tmp_path, seed=3, clips_per_class=2)
    assert f"wrote {folder}" in first.output and (folder / "manifest.csv").is_file()
    assert f"reused {folder}" in runner.invoke(main, args).output


# ---------------------------------------------------------------- ESC-50-layout generator

def _generate_small_esc50(root, seed=0):
    from edgecl.data.esc50_synthetic import generate_esc50_layout

    return generate_esc50_layout(root, n_classes=4, clips_per_fold=2, sample_rate=8000,
                                 clip_seconds=0.25, seed=seed)


def test_esc50_layout_loads_with_the_esc50_loader(tmp_path):
    from edgecl.data.esc50 import load_esc50

    root = _generate_small_esc50(tmp_path / "esc")
    split = load_esc50(root, test_fold=3, sample_rate=8000, clip_seconds=0.25)
    assert split.classes == ["bell-x0.6", "bell-x0.8", "bell-x1", "bell-x1.25"]
    assert len(split.train) == 4 * 4 * 2 and len(split.test) == 4 * 2
    assert {clip.fold for clip in split.test} == {3}
    info = sf.info(split.test[0].path)
    assert (info.samplerate, info.frames, info.subtype) == (8000, 2000, "PCM_16")


def test_esc50_layout_is_deterministic_and_seeded(tmp_path):
    first = _generate_small_esc50(tmp_path / "a")
    again = _generate_small_esc50(tmp_path / "b")
    other = _generate_small_esc50(tmp_path / "c", seed=1)
    names = sorted(p.name for p in (first / "audio").iterdir())
    assert names == sorted(p.name for p in (again / "audio").iterdir())
    assert all((first / "audio" / n).read_bytes() == (again / "audio" / n).read_bytes()
               for n in names)
    assert any((first / "audio" / n).read_bytes() != (other / "audio" / n).read_bytes()
               for n in names)


def test_esc50_layout_speeds_make_different_classes(tmp_path):
    """The same family at two speeds has its spectral centroid moved by about the speed ratio."""
    from edgecl.data.esc50_synthetic import _sources

    n, rate = 8000, 16000
    sources = _sources(n, rate, 5)  # bell at x0.6 ... x1.6

    def centroid(index):
        spectra = [np.abs(np.fft.rfft(sources[index](np.random.default_rng(s)))) for s in range(8)]
        power = np.mean(spectra, axis=0) ** 2
        return float(np.sum(np.fft.rfftfreq(n, 1 / rate) * power) / np.sum(power))

    assert centroid(4) / centroid(0) == pytest.approx(1.6 / 0.6, rel=0.25)


def test_esc50_layout_refuses_an_existing_folder_and_bad_counts(tmp_path):
    from edgecl.data.esc50_synthetic import generate_esc50_layout
    from edgecl.errors import EdgeclError

    (tmp_path / "taken").mkdir()
    with pytest.raises(EdgeclError, match="already exists"):
        generate_esc50_layout(tmp_path / "taken")
    with pytest.raises(EdgeclError, match="--classes"):
        generate_esc50_layout(tmp_path / "new", n_classes=51)
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
