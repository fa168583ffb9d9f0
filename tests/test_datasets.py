"""Dataset loaders on fixtures in the official layouts, the real FSDD manifest, and bad input."""

from __future__ import annotations

import csv
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures_audio import (
    ESC50_HEADER,
    fixture_signal,
    write_esc50,
    write_manifest_dataset,
    write_tau,
    write_wav,
)

from edgecl.audio import load_audio
from edgecl.cli import main
from edgecl.data import DATASET_NAMES, load_dataset
from edgecl.data.esc50 import load_esc50
from edgecl.data.manifest import load_manifest, stratified_test_split
from edgecl.data.tau import load_tau
from edgecl.errors import EdgeclError

# ------------------------------------------------------------------------------------ ESC-50

def test_esc50_test_fold_tests_and_other_folds_train(tmp_path):
    root = write_esc50(tmp_path / "ESC-50")
    split = load_esc50(root, test_fold=2)
    assert split.name == "ESC-50" and split.classes == ["dog", "rain", "siren"]
    assert (split.sample_rate, split.clip_seconds, split.clip_samples) == (44100, 5.0, 220500)
    assert {clip.fold for clip in split.test} == {2}
    assert {clip.fold for clip in split.train} == {1, 3, 4, 5}
    assert len(split.test) == 3 and len(split.train) == 12
    assert all(clip.path.is_absolute() and clip.path.is_file() for clip in split.train + split.test)
    assert all(clip.split == "test" for clip in split.test)
    assert split.counts("train") == {"dog": 4, "rain": 4, "siren": 4}


def test_esc50_clip_loads_padded_to_five_seconds(tmp_path):
    split = load_esc50(write_esc50(tmp_path / "ESC-50"))
    wave = load_audio(split.train[0].path, split.sample_rate, split.clip_samples)
    assert wave.shape == (220500,) and wave[:4410].any() and not wave[4410:].any()


def test_esc50_unknown_test_fold_lists_the_folds(tmp_path):
    root = write_esc50(tmp_path / "ESC-50")
    with pytest.raises(EdgeclError, match="--test-fold: expected one of 1, 2, 3, 4, 5.*got 7"):
        load_esc50(root, test_fold=7)


def test_esc50_missing_audio_names_first_file_and_count(tmp_path):
    root = write_esc50(tmp_path / "ESC-50")
    files = sorted((root / "audio").iterdir())
    for path in files[:2]:
        path.unlink()
    with pytest.raises(EdgeclError, match=r"not found \(2 missing file"):
        load_esc50(root)


def test_esc50_bad_metadata_is_a_clear_error(tmp_path):
    root = write_esc50(tmp_path / "ESC-50")
    meta = root / "meta" / "esc50.csv"
    text = meta.read_text()
    meta.write_text(text.replace(ESC50_HEADER, "filename,fold,label"))
    with pytest.raises(EdgeclError, match="esc50.csv: header must have column.*missing target"):
        load_esc50(root)
    meta.write_text(text.replace(",1,0,dog,", ",one,0,dog,", 1))
    with pytest.raises(EdgeclError, match="line 2: fold must be an integer, got 'one'"):
        load_esc50(root)
    meta.unlink()
    with pytest.raises(EdgeclError, match="esc50.csv: metadata file not found"):
        load_esc50(root)
    with pytest.raises(EdgeclError, match="ESC-50 folder not found"):
        load_esc50(tmp_path / "nowhere")


# ----------------------------------------------------------------------------------- TAU-ASC

def test_tau_fold1_train_trains_and_evaluate_tests(tmp_path):
    root = write_tau(tmp_path / "TAU")
    split = load_tau(root, clip_seconds=0.5)
    assert split.name == "TAU-ASC" and split.classes == ["airport", "metro", "park"]
    assert split.sample_rate == 48000 and split.clip_samples == 24000
    assert split.counts("train") == {"airport": 2, "metro": 2, "park": 2}
    assert split.counts("test") == {"airport": 1, "metro": 1, "park": 1}
    assert {c.path for c in split.train}.isdisjoint({c.path for c in split.test})
    assert split.test[0].path == root / "audio" / "airport-vienna-1002-40020-a.wav"
    assert load_tau(root).clip_seconds == 10.0


def test_tau_24bit_stereo_clip_loads_as_the_channel_mean(tmp_path):
    root = write_tau(tmp_path / "TAU")
    split = load_tau(root, clip_seconds=0.5)
    clip = split.train[0]
    wave = load_audio(clip.path, split.sample_rate, split.clip_samples)
    expected = fixture_signal(24000, seed=0, channels=2).mean(axis=1)
    assert wave.shape == (24000,)
    np.testing.assert_allclose(wave, expected, atol=2 / 2 ** 23)


def test_tau_headers_are_checked(tmp_path):
    root = write_tau(tmp_path / "TAU")
    meta = root / "meta.csv"
    meta.write_text(meta.read_text().replace("\t", ","))
    with pytest.raises(EdgeclError, match=r"meta.csv: header must have column.*tab-separated"):
        load_tau(root)


def test_tau_missing_files_reported_up_front_with_a_count(tmp_path):
    root = write_tau(tmp_path / "TAU")
    (root / "audio" / "metro-lisbon-1000-40000-a.wav").unlink()
    (root / "audio" / "park-paris-1001-40010-a.wav").unlink()
    with pytest.raises(EdgeclError,
                       match=r"metro-lisbon-1000-40000-a.wav not found \(2 missing file"):
        load_tau(root)


def test_tau_inconsistent_lists_are_errors(tmp_path):
    root = write_tau(tmp_path / "TAU")
    evaluate = root / "evaluation_setup" / "fold1_evaluate.csv"
    original = evaluate.read_text()
    evaluate.write_text(original.replace("airport-vienna-1002-40020-a.wav\tairport",
                                         "airport-vienna-1002-40020-a.wav\tpark"))
    with pytest.raises(EdgeclError, match="labelled 'park' but .*meta.csv says 'airport'"):
        load_tau(root)
    evaluate.write_text(original + "audio/airport-lisbon-1000-40000-a.wav\tairport\n")
    with pytest.raises(EdgeclError, match="listed twice"):
        load_tau(root)
    meta = root / "meta.csv"
    meta.write_text(meta.read_text() + "../elsewhere.wav\tairport\tx\ta\n")
    evaluate.write_text(original + "../elsewhere.wav\tairport\n")
    with pytest.raises(EdgeclError, match="line 5: path '../elsewhere.wav' leaves the dataset"):
        load_tau(root)
    evaluate.write_text(original + "audio/unknown.wav\tairport\n")
    with pytest.raises(EdgeclError, match="audio/unknown.wav is not listed in"):
        load_tau(root)
    evaluate.unlink()
    with pytest.raises(EdgeclError, match="fold1_evaluate.csv: metadata file not found"):
        load_tau(root)


# ---------------------------------------------------------------------------------- manifest

def test_manifest_split_column_is_respected(tmp_path):
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=4, test_per_class=1)
    split = load_manifest(csv_path)
    assert split.classes == ["a", "b", "c"] and split.name == "manifest"
    assert split.counts("test") == {"a": 1, "b": 1, "c": 1}
    assert {clip.path.name for clip in split.test} == {"0.wav"}
    assert (split.sample_rate, split.clip_seconds) == (8000, 1.0)
    assert load_manifest(csv_path.parent).train == split.train  # the folder works too


def test_manifest_model_rate_and_clip_length_options(tmp_path):
    csv_path = write_manifest_dataset(tmp_path / "mine", sample_rate=22050)
    assert load_manifest(csv_path).sample_rate == 22050
    split = load_manifest(csv_path, sample_rate=16000, clip_seconds=0.5)
    assert (split.sample_rate, split.clip_samples) == (16000, 8000)


def test_manifest_without_split_draws_a_stratified_split_by_seed(tmp_path):
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=10, test_per_class=None)
    first = load_manifest(csv_path, seed=1)
    assert first.counts("test") == {"a": 2, "b": 2, "c": 2}
    assert load_manifest(csv_path, seed=1).test == first.test
    assert load_manifest(csv_path, seed=2).test != first.test
    assert load_manifest(csv_path, seed=1, test_fraction=0.5).counts("test")["a"] == 5


def test_stratified_split_keeps_a_training_clip_in_every_class():
    splits = stratified_test_split(["x"] * 1 + ["y"] * 2, test_fraction=0.9, seed=0)
    assert splits[0] == "train" and sorted(splits[1:]) == ["test", "train"]
    with pytest.raises(EdgeclError, match="test fraction"):
        stratified_test_split(["x"], 1.0, 0)


def _rewrite(csv_path, replace_from, replace_to):
    csv_path.write_text(csv_path.read_text().replace(replace_from, replace_to, 1))


@pytest.mark.parametrize("change, expected", [
    (("clips/a/1.wav", "../outside.wav"), r"line 3: path '\.\./outside.wav' leaves the dataset"),
    (("clips/a/1.wav", "clips/../../x.wav"), r"leaves the dataset folder"),
    (("clips/a/1.wav", "/nowhere/1.wav"), r"/nowhere/1.wav not found"),  # absolute: as given
    (("path,label,split", "path,class,split"), r"header must have column\(s\) path, label"),
    (("clips/a/1.wav,a,train", "clips/a/1.wav,a,valid"),
     r"split must be 'train', 'val' or 'test', got 'valid'"),
    (("clips/a/1.wav,a,train", "clips/a/1.wav,,train"), r"line 3: empty path or label"),
    (("clips/a/1.wav", "clips/a/99.wav"), r"99.wav not found \(1 missing"),
])
def test_manifest_bad_rows_are_clear_errors(tmp_path, change, expected):
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=3)
    _rewrite(csv_path, *change)
    with pytest.raises(EdgeclError, match=expected):
        load_manifest(csv_path)


def test_manifest_takes_absolute_paths_as_given(tmp_path):
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=3)
    absolute = (csv_path.parent / "clips" / "a" / "1.wav").resolve()
    _rewrite(csv_path, "clips/a/1.wav", str(absolute))
    split = load_manifest(csv_path)
    assert absolute in [clip.path for clip in split.train + split.test]


def test_manifest_val_rows_are_the_validation_clips(tmp_path):
    from edgecl.tasks import make_tasks

    csv_path = write_manifest_dataset(tmp_path / "mine", labels=("a", "b"), clips_per_class=4)
    _rewrite(csv_path, "clips/a/1.wav,a,train", "clips/a/1.wav,a,val")
    _rewrite(csv_path, "clips/b/1.wav,b,train", "clips/b/1.wav,b,val")
    split = load_manifest(csv_path)
    assert sorted(clip.path.name for clip in split.val) == ["1.wav", "1.wav"]
    [task] = make_tasks(split, 1, 2, 2, seed=0).tasks
    assert sorted(lc.clip.label for lc in task.val) == ["a", "b"]
    assert {lc.clip.path for lc in task.val}.isdisjoint(lc.clip.path for lc in task.train)
    assert len(task.train) == len(split.train)  # nothing carved from train
    # Without val rows a share of train is carved out as before.
    plain = load_manifest(write_manifest_dataset(tmp_path / "plain", labels=("a", "b"),
                                                 clips_per_class=4))
    [carved] = make_tasks(plain, 1, 2, 2, seed=0).tasks
    assert carved.val and len(carved.train) < len(plain.train)


def test_manifest_class_without_training_clips_is_an_error(tmp_path):
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=2)
    _rewrite(csv_path, "clips/b/1.wav,b,train", "clips/b/1.wav,b,test")
    with pytest.raises(EdgeclError, match="class 'b' has no training clips"):
        load_manifest(csv_path)


def test_manifest_missing_or_empty_is_an_error(tmp_path):
    with pytest.raises(EdgeclError, match="manifest CSV not found"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("path,label\n")
    with pytest.raises(EdgeclError, match="no clips listed"):
        load_manifest(tmp_path)


@pytest.mark.slow  # reads the real corpus
def test_fsdd_manifest_keeps_its_split(fsdd_manifest):
    with fsdd_manifest.open(newline="") as handle:
        expected = Counter(row["split"] for row in csv.DictReader(handle))
    split = load_manifest(fsdd_manifest)
    assert split.classes == [str(digit) for digit in range(10)]
    assert len(split.train) + len(split.test) == 3000
    assert (len(split.train), len(split.test)) == (expected["train"], expected["test"])
    assert (split.sample_rate, split.clip_samples) == (8000, 8000)
    assert all(count > 0 for count in split.counts("test").values())
    wave = load_audio(split.test[0].path, split.sample_rate, split.clip_samples)
    assert wave.shape == (8000,) and np.abs(wave).max() > 0.01


# ---------------------------------------------------------------------------------- registry

def test_load_dataset_accepts_names_and_aliases(tmp_path):
    esc = write_esc50(tmp_path / "ESC-50")
    tau = write_tau(tmp_path / "TAU")
    assert load_dataset("esc50", esc, test_fold=3).name == "ESC-50"
    assert {c.fold for c in load_dataset("ESC-50", esc, test_fold=3).test} == {3}
    assert load_dataset("Tau", tau, clip_seconds=0.5).clip_samples == 24000
    assert load_dataset("TAU-ASC", tau, sample_rate=16000).sample_rate == 16000
    csv_path = write_manifest_dataset(tmp_path / "mine", test_per_class=None, clips_per_class=5)
    assert load_dataset("manifest", csv_path, seed=4).test == load_manifest(csv_path, seed=4).test


def test_load_dataset_rejects_unknown_names_and_missing_roots():
    with pytest.raises(EdgeclError) as caught:
        load_dataset("urbansound", "x")
    assert all(name in str(caught.value) for name in DATASET_NAMES)
    with pytest.raises(EdgeclError, match="--data-root: dataset ESC-50 needs"):
        load_dataset("esc50", None)
    with pytest.raises(EdgeclError, match="--workspace"):
        load_dataset("synthetic", None)


def test_data_info_command_prints_classes_counts_and_rate(tmp_path):
    root = write_tau(tmp_path / "TAU")
    result = CliRunner().invoke(main, ["data", "info", "tau", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "48000 Hz" in result.output and "6 train, 3 test" in result.output
    assert any(line.split() == ["metro", "2", "1"] for line in result.output.splitlines())
    bad = CliRunner().invoke(main, ["data", "info", "esc50", "--data-root", str(tmp_path / "no")])
    assert bad.exit_code == 2 and "edgecl: error: --data-root" in bad.output


def test_unreadable_file_is_caught_by_the_loader_not_at_listing(tmp_path):
    # Listing checks existence only; decoding errors surface when the clip is loaded.
    csv_path = write_manifest_dataset(tmp_path / "mine", clips_per_class=2)
    (csv_path.parent / "clips" / "a" / "1.wav").write_bytes(b"junk")
    split = load_manifest(csv_path)
    broken = next(clip for clip in split.train if clip.path.name == "1.wav" and clip.label == "a")
    with pytest.raises(EdgeclError, match="1.wav: unreadable or corrupt"):
        load_audio(broken.path, split.sample_rate, split.clip_samples)
    write_wav(broken.path, fixture_signal(100, seed=0), 8000)
    assert load_audio(broken.path, 8000, 100).shape == (100,)
