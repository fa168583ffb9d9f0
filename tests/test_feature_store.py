"""The feature store: entries keyed by the file's identity and the front-end settings, written
atomically (two writers at once are safe), read back byte for byte; a second run over the same data
computes no clip features and gets the same figures."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
from fixtures_audio import write_manifest_dataset

from edgecl.config import RunConfig
from edgecl.errors import EdgeclError
from edgecl.feature_store import FeatureStore
from edgecl.trainer import train

FRONTEND = {"n_mels": 40, "sample_rate": 8000}


def _store(root, **changes):
    settings = dict(frontend=FRONTEND, sample_rate=8000, clip_samples=2000)
    settings.update(changes)
    return FeatureStore(root, **settings)


def test_entries_round_trip_and_follow_the_file_and_settings(tmp_path):
    audio = tmp_path / "clip.wav"
    audio.write_bytes(b"not really audio")
    store = _store(tmp_path / "features")
    assert store.load(audio) is None
    features = np.random.default_rng(0).standard_normal((1, 40, 26)).astype(np.float32)
    store.save(audio, features)
    loaded = store.load(audio)
    assert loaded.dtype == np.float32 and loaded.tobytes() == features.tobytes()
    assert _store(tmp_path / "features", clip_samples=4000).load(audio) is None
    assert _store(tmp_path / "features", frontend={**FRONTEND, "n_mels": 64}).load(audio) is None
    stat = audio.stat()
    os.utime(audio, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # an edited file
    assert store.load(audio) is None
    store.path_for(audio).parent.mkdir(parents=True, exist_ok=True)
    store.path_for(audio).write_bytes(b"\x93NUMPY truncated")  # never by save; treated as absent
    assert store.load(audio) is None


def _writer(root: str, audio_paths: list[str], rounds: int, queue) -> None:
    store = _store(root)
    bad = 0
    for _ in range(rounds):
        for i, path in enumerate(audio_paths):
            store.save(path, np.full((1, 40, 26), i, dtype=np.float32))
            loaded = store.load(audio_paths[(i + 1) % len(audio_paths)])
            if loaded is not None and not (loaded.shape == (1, 40, 26)
                                           and np.all(loaded == (i + 1) % len(audio_paths))):
                bad += 1
    queue.put(bad)


def test_two_writers_at_once_never_expose_a_partial_entry(tmp_path):
    paths = []
    for i in range(8):
        (tmp_path / f"{i}.wav").write_bytes(bytes([i]))
        paths.append(str(tmp_path / f"{i}.wav"))
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    workers = [context.Process(target=_writer, args=(str(tmp_path / "features"), paths, 25, queue))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [worker.exitcode for worker in workers] == [0, 0]
    assert [queue.get(timeout=5) for _ in workers] == [0, 0]
    store = _store(tmp_path / "features")
    for i, path in enumerate(paths):
        assert np.all(store.load(path) == i)
    assert not list((tmp_path / "features").rglob("*.tmp"))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("store-data")
    return write_manifest_dataset(root, labels=("a", "b", "c", "d"), clips_per_class=6,
                                  test_per_class=2, seconds=0.25, sample_rate=8000)


def _config(manifest, workspace, **overrides):
    base = dict(dataset="manifest", data_root=str(manifest), workspace=str(workspace), width=8,
                epochs=1, batch_size=8, patience=0, n_tasks=2, n_init_cls=2, n_cls_a_task=2,
                mode="finetune", export=False, quiet=True, threads=1, seed=2, exp_name="first")
    base.update(overrides)
    return RunConfig(**base)


def _figures(results):
    return (results["accuracy_matrix"], results["phase_accuracy"],
            [p["train_macs"] for p in results["phases"]])


def test_second_run_over_the_same_data_computes_no_features(manifest, tmp_path):
    first = train(_config(manifest, tmp_path))
    assert first["phases"][-1]["feature_cache"]["loaded"] == 0
    second = train(_config(manifest, tmp_path, exp_name="second"))
    cache = second["phases"][-1]["feature_cache"]
    assert cache["computed"] == 0 and cache["loaded"] == first["phases"][-1]["feature_cache"]["computed"]
    assert _figures(second) == _figures(first)
    # coded new clips: the update reads the clips' own features (from the store in fourth)
    replay = dict(mode="replay", memory_size=4, mem_manage="prototype", memory_format="mulaw8")
    third = train(_config(manifest, tmp_path, exp_name="r1", **replay))
    fourth = train(_config(manifest, tmp_path, exp_name="r2", **replay))
    assert [p["memory_update_macs"] for p in third["phases"]] == \
        [p["memory_update_macs"] for p in fourth["phases"]]  # store reads count as front-end runs
    assert _figures(third) == _figures(fourth)


def test_no_feature_store_writes_nothing_and_gives_the_same_figures(manifest, tmp_path):
    without = train(_config(manifest, tmp_path / "off", feature_store=False))
    assert not (tmp_path / "off" / "features").exists()
    assert _figures(train(_config(manifest, tmp_path / "on"))) == _figures(without)


def test_the_store_folder_is_not_a_run_name(manifest, tmp_path):
    with pytest.raises(EdgeclError, match="--exp-name"):
        train(_config(manifest, tmp_path, exp_name="features"))


def test_a_cache_snapshot_shares_entries_but_forgets_on_its_own():
    import torch

    from edgecl.features import FeatureCache, FeatureItem

    frontend = torch.nn.Identity()
    cache = FeatureCache(frontend)
    items = [FeatureItem(f"k{i}", "memory", (lambda i=i: np.full((1, 2, 3), i, np.float32)),
                         "logmel") for i in range(3)]
    cache.get(items)
    snapshot = cache.snapshot()
    assert torch.equal(snapshot.get(items), cache.get(items)) and snapshot.computed == 0
    snapshot.forget(items[:2])
    assert len(snapshot) == 1 and len(cache) == 3


def test_a_clips_features_do_not_depend_on_the_clips_requested_with_it():
    """Front-end kernels may round differently for different batch sizes; the cache runs one clip
    at a time, so what it computes (and stores) for a clip is the same whatever shares the
    request. The front end here makes any batching visible: it adds the batch size."""
    import torch

    from edgecl.features import FeatureCache, FeatureItem

    class BatchSensitive(torch.nn.Module):
        def forward(self, waves):
            return waves[:, None, None, :4] + waves.shape[0]

    def item(i):
        return FeatureItem(f"clip{i}", "clip", lambda i=i: np.full(8, float(i), np.float32))

    together = FeatureCache(BatchSensitive()).get([item(i) for i in range(5)])
    for i in range(5):
        alone = FeatureCache(BatchSensitive()).get([item(i)])[0]
        assert torch.equal(alone, together[i])


def test_the_front_end_runs_on_one_thread_whatever_the_runs_thread_count():
    """The thread count also changes a front end's last bits, and runs sharing a store may use
    different --threads: the cache runs the front end on one thread and restores the count."""
    import torch

    from edgecl.features import FeatureCache, FeatureItem

    class ThreadCount(torch.nn.Module):
        def forward(self, waves):
            return torch.full((len(waves), 1, 1, 1), float(torch.get_num_threads()))

    torch.set_num_threads(2)  # conftest's autouse fixture restores the count after the test
    item = FeatureItem("clip", "clip", lambda: np.zeros(8, np.float32))
    assert FeatureCache(ThreadCount()).get([item]).item() == 1.0
    assert torch.get_num_threads() == 2
