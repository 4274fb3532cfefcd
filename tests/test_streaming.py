"""Datasets larger than memory: chunked npz and folder reads, streamed exports, streamed runs."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from lab.data import tfrecord
from lab.config import RunConfig
from lab.data.datasets import load_dataset, load_npz
from lab.data.datasets import medmnist as mm
from lab.data.datasets import sources, streaming
from lab.data.datasets.folders import load_image_folder, stream_image_folder, write_image_folder
from lab.system.download import ChecksumError

SPLITS = ("train", "val", "test")


def _write_npz(path, *, n=(40, 12, 16), side=10, channels=3, classes=4, compressed=True, class_names=None,
               seed=0, learnable=False):
    """A MedMNIST-format npz: NHW (grayscale) or NHWC uint8 images, (N, 1) labels; ``learnable``:
    the images' brightness gives the class away, so that a one-epoch run learns."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(SPLITS, n):
        shape = (count, side, side) if channels == 1 else (count, side, side, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.permutation(np.arange(count) % classes).reshape(count, 1)
        if learnable:
            level = (arrays[f"{split}_labels"][:, 0] * (200 // (classes - 1))).astype(np.uint8)
            arrays[f"{split}_images"] = (arrays[f"{split}_images"] // 8 + level.reshape(-1, *[1] * (len(shape) - 1)))
    if class_names is not None:
        arrays["class_names"] = np.asarray(class_names)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


def _concat(split_source, chunk):
    parts = list(split_source.chunks(chunk))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# -- chunked reading equals the in-memory path ---------------------------------------------------


@pytest.mark.parametrize("compressed,channels", [(True, 3), (False, 1)])
def test_npz_read_in_chunks_equals_the_in_memory_load(tmp_path, compressed, channels):
    path = tmp_path / "mine.npz"
    _write_npz(path, channels=channels, compressed=compressed)
    stream = streaming.open_stream(f"npz:{path}")
    eager = load_dataset(f"npz:{path}")
    for split in SPLITS:
        images, labels = _concat(stream.splits[split], chunk=7)  # chunks that do not divide the splits
        x, y = eager.split(split)
        np.testing.assert_array_equal(images, x)
        np.testing.assert_array_equal(labels, y)
    assert stream.summary() == eager.summary()
    assert stream.source == eager.source


@pytest.mark.parametrize("options", [{"num_classes": 3, "seed": 2}, {"limit": 9, "seed": 1},
                                     {"num_classes": 2, "limit": 5, "seed": 0}])
def test_class_subsets_and_limits_pick_the_same_images_streamed(tmp_path, options):
    path = tmp_path / "mine.npz"
    _write_npz(path)
    stream = streaming.open_stream(f"npz:{path}", **options)
    eager = load_dataset(f"npz:{path}", **options)
    assert stream.class_names == eager.class_names and stream.source == eager.source
    for split in SPLITS:
        images, labels = _concat(stream.splits[split], chunk=5)
        np.testing.assert_array_equal(images, eager.split(split)[0])
        np.testing.assert_array_equal(labels, eager.split(split)[1])


def test_streamed_export_equals_the_in_memory_export(tmp_path):
    path = tmp_path / "mine.npz"
    _write_npz(path)
    eager = load_dataset(f"npz:{path}", limit=10, seed=3)
    tfrecord.export_dataset(eager, tmp_path / "memory")
    tfrecord.export_stream(streaming.open_stream(f"npz:{path}", limit=10, seed=3), tmp_path / "stream",
                           chunk_images=3, images_per_shard=4, verbose=False)
    streamed = tfrecord.open_export(tmp_path / "stream")
    # The content hash computed chunk by chunk is Dataset.content_hash() of the same data.
    assert streamed.content_hash() == eager.content_hash()
    assert streamed.summary() == eager.summary()
    for split in SPLITS:
        memory = tfrecord.read_manifest(tmp_path / "memory", split)
        stream = tfrecord.read_manifest(tmp_path / "stream", split)
        assert stream["content_sha256"] == memory["content_sha256"]
        np.testing.assert_array_equal(streamed.labels(split), eager.split(split)[1])
        # The in-memory data passes the provenance check of the streamed shards' content.
        pairs = list(tfrecord.read_tfrecords(tmp_path / "stream", split).as_numpy_iterator())
        np.testing.assert_array_equal(np.stack([p[0] for p in pairs]), eager.split(split)[0])
    np.testing.assert_array_equal(streamed.images("test", [5, 0, 2]), eager.x_test[[5, 0, 2]])
    with pytest.raises(ValueError, match="streamed from the TFRecords"):
        streamed.split("train")


def test_a_streamed_export_never_loads_the_data_eagerly(tmp_path, monkeypatch):
    """Memory stays bounded: the eager loaders are never called and no read asks for more than a chunk."""
    path = tmp_path / "mine.npz"
    _write_npz(path, n=(50, 10, 10))

    def refuse(*args, **kwargs):
        raise AssertionError("the streamed export called an eager loader")

    import lab.data.datasets

    for module, name in ((lab.data.datasets, "load_dataset"), (lab.data.datasets, "load_data"), (mm, "load_npz"),
                         (mm, "load_medmnist")):
        monkeypatch.setattr(module, name, refuse)
    requested = []
    chunks = sources.NpyMember.chunks

    def recording(self, rows):
        if self.member.endswith("_images.npy"):
            requested.append(rows)
        return chunks(self, rows)

    monkeypatch.setattr(sources.NpyMember, "chunks", recording)
    config = RunConfig(dataset=f"npz:{path}", data_path="stream", tfrecord_dir=str(tmp_path / "records"))
    data = streaming.load_streamed(config, verbose=False)
    assert isinstance(data, tfrecord.StreamedDataset) and data.access["read_from"] == "source, in chunks"
    assert requested and max(requested) <= sources.DEFAULT_CHUNK_IMAGES
    assert sum(data.summary()["sizes"].values()) == 70


# -- refusing what is not this data -------------------------------------------------------------


def test_a_corrupt_or_foreign_shard_is_refused(tmp_path):
    path, other = tmp_path / "a.npz", tmp_path / "b.npz"
    _write_npz(path)
    _write_npz(other, seed=1)
    for source, folder in ((path, "a"), (other, "b")):
        tfrecord.export_stream(streaming.open_stream(f"npz:{source}"), tmp_path / folder, images_per_shard=8,
                               verbose=False)
    data = tfrecord.open_export(tmp_path / "a")
    shard = sorted((tmp_path / "a").glob("train-*.tfrecord"))[0]
    foreign = sorted((tmp_path / "b").glob("train-*.tfrecord"))[0]
    original = shard.read_bytes()
    shard.write_bytes(foreign.read_bytes())  # same size, other data
    with pytest.raises(tf.errors.DataLossError, match=shard.name):
        data.pipeline("train", training=True)
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.raises(tf.errors.DataLossError, match="damaged in place"):
        data.pipeline("train", training=False)
    # A whole export of other data is refused by its fingerprint, both sides named.
    stream_b = streaming.open_stream(f"npz:{other}")
    fingerprint_b = {"task": stream_b.task, "sizes": stream_b.summary()["sizes"], "source": stream_b.source}
    with pytest.raises(ValueError, match="were exported from a but this run uses b"):
        tfrecord.check_export(tmp_path / "a", "b", fingerprint_b)
    with pytest.raises(ValueError, match=r"exported from a \(.*source.md5 .*\) but this run uses a \(.*source.md5"):
        tfrecord.check_export(tmp_path / "a", "a", fingerprint_b)
    stream_a = streaming.open_stream(f"npz:{path}")
    fingerprint_a = {"task": stream_a.task, "sizes": stream_a.summary()["sizes"], "source": stream_a.source}
    assert tfrecord.check_export(tmp_path / "a", "a", fingerprint_a, source=stream_a.source)["name"] == "a"
    with pytest.raises(ValueError, match=r"source.md5"):
        tfrecord.check_export(tmp_path / "a", "a", fingerprint_a, source=stream_b.source)
    # A split re-exported on its own no longer matches dataset.json.
    tfrecord.write_tfrecords(np.zeros((3, 10, 10, 3), np.uint8), np.zeros(3, np.int64), tmp_path / "a", split="val")
    with pytest.raises(ValueError, match="re-exported on its own"):
        tfrecord.open_export(tmp_path / "a")


def test_an_export_of_changed_source_data_is_refused_before_a_run(tmp_path):
    path = tmp_path / "mine.npz"
    _write_npz(path)
    config = RunConfig(dataset=f"npz:{path}", data_path="stream", tfrecord_dir=str(tmp_path / "records"))
    assert streaming.load_streamed(config, verbose=False).access["exported_now"] is True
    shards = sorted(p.name for p in (tmp_path / "records").iterdir())
    # The same data again: the shards are checked by fingerprint and reused, not rewritten.
    assert streaming.load_streamed(config, verbose=False).access["exported_now"] is False
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == shards
    # The same data in memory (a sweep's shared load) reuses them too: its content is checked.
    reused = streaming.load_streamed(config, data=load_dataset(f"npz:{path}"), verbose=False)
    assert reused.access == {**reused.access, "exported_now": False, "read_from": "arrays in memory"}
    _write_npz(path, seed=5)  # the file changes: another md5
    with pytest.raises(ValueError, match="source.md5"):
        streaming.load_streamed(config, verbose=False)


# -- your own npz files -------------------------------------------------------------------------


def test_npz_with_and_without_class_names(tmp_path):
    named, bare = tmp_path / "named.npz", tmp_path / "bare.npz"
    _write_npz(named, classes=3, class_names=["a", "b", "c"])
    _write_npz(bare, classes=2, channels=1)
    data = load_npz(named)
    assert data.class_names == ["a", "b", "c"] and data.source["class_names"] == "from the file"
    assert data.source["official"] is False and data.source["md5"] == mm.file_hash(named, "md5")
    assert load_dataset(f"npz:{named}", class_names=["x", "y", "z"]).class_names == ["x", "y", "z"]
    inferred = load_dataset(f"npz:{bare}")
    assert inferred.class_names == ["0", "1"] and inferred.source["class_names"] == "inferred"
    assert inferred.task == "binary-class" and inferred.input_shape == (10, 10, 1)
    stream = streaming.open_stream(f"npz:{named}")
    assert stream.class_names == ["a", "b", "c"] and stream.source == load_dataset(f"npz:{named}").source


def test_bad_npz_files_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="No npz file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    partial = tmp_path / "partial.npz"
    np.savez(partial, train_images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="lacks the arrays"):
        load_dataset(f"npz:{partial}")
    names = tmp_path / "names.npz"
    _write_npz(names, classes=4, class_names=["a", "b"])
    with pytest.raises(ValueError, match="2 class names"):
        load_dataset(f"npz:{names}")
    with pytest.raises(ValueError, match="holds 10x10 images, received size=28"):
        load_dataset(f"npz:{names}", size=28)
    truncated = tmp_path / "truncated.npz"
    _write_npz(truncated, compressed=False)
    with zipfile.ZipFile(truncated) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    # Cut the file inside train_images' data: the chunked reader names the entry.
    cut = infos["train_images.npy"].header_offset + 200
    truncated.write_bytes(truncated.read_bytes()[:cut])
    with pytest.raises(ValueError, match="npz"):
        list(streaming.open_stream(f"npz:{truncated}").splits["train"].chunks(8))


def test_a_registry_file_failing_its_checksum_says_how_to_use_it_as_your_own(tmp_path):
    path = mm.npz_path("bloodmnist")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_npz(path, classes=8)
    for loader in (lambda: load_dataset("bloodmnist", download=False),
                   lambda: streaming.open_stream("bloodmnist", download=False)):
        with pytest.raises(ChecksumError, match=r"expected md5 .*dataset='npz:.*unofficial"):
            loader()
    # Used as your own file, it loads, marked unofficial with its md5.
    data = load_dataset(f"npz:{path}")
    assert data.source["official"] is False and len(data.source["md5"]) == 32


# -- image folders, lazily --------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["fractions", "split folders without val"])
def test_a_lazy_folder_read_equals_the_eager_one(tmp_path, layout):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(24, 13, 11, 3), dtype=np.uint8)
    labels = np.arange(24) % 3
    root = tmp_path / "folder"
    if layout == "fractions":
        write_image_folder(images, labels, ["a", "b", "c"], root)
    else:
        write_image_folder(images[:16], labels[:16], ["a", "b", "c"], root / "train")
        write_image_folder(images[16:], labels[16:], ["a", "b", "c"], root / "test")
    eager = load_image_folder(root, dataset_size=8, seed=4)
    lazy = stream_image_folder(root, dataset_size=8, seed=4)
    assert lazy.source == eager.source and lazy.class_names == eager.class_names
    for split in SPLITS:
        x, y = _concat(lazy.splits[split], chunk=4)
        np.testing.assert_array_equal(x, eager.split(split)[0])
        np.testing.assert_array_equal(y, eager.split(split)[1])
    # A folder converts to TFRecords like any other source: the same data as the eager load's.
    tfrecord.export_stream(lazy, tmp_path / "records", chunk_images=5, verbose=False)
    assert tfrecord.open_export(tmp_path / "records").content_hash() == eager.content_hash()


def test_tfds_streamed_equals_loaded(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=20):
        eager = load_dataset("tfds:mnist", val_fraction=0.25, seed=1)
        stream = streaming.open_stream("tfds:mnist", val_fraction=0.25, seed=1)
        assert stream.source == eager.source and stream.summary() == eager.summary()
        for split in SPLITS:
            x, y = _concat(stream.splits[split], chunk=6)
            np.testing.assert_array_equal(x, eager.split(split)[0])
            np.testing.assert_array_equal(y, eager.split(split)[1])
        tfrecord.export_stream(stream, tmp_path / "records", verbose=False)
    assert tfrecord.open_export(tmp_path / "records").content_hash() == eager.content_hash()


# -- runs -----------------------------------------------------------------------------------------

FAST = dict(model="cnn", depth=2, filters=8, dense_units=16, epochs=2, batch_size=16, learning_rate=0.01,
            verbose=0)


@pytest.mark.slow  # two short training runs: about 45 s on two shared cores
def test_a_run_records_which_path_it_used_and_streams_evaluation(tmp_path):
    from lab.runs.training import train

    path = tmp_path / "mine.npz"
    _write_npz(path, n=(96, 24, 24), channels=1, classes=3, class_names=["x", "y", "z"], learnable=True)
    memory = train(RunConfig(**FAST, dataset=f"npz:{path}", data_path="memory"))
    stream = train(RunConfig(**FAST, dataset=f"npz:{path}", data_path="stream"))
    records = []
    for result in (memory, stream):
        assert result.status == "completed"
        records.append(json.loads((result.run_dir / "config.json").read_text())["data"])
        assert (result.run_dir / "plots" / "sample_predictions.png").is_file()
        assert (result.run_dir / "plots" / "top_losses.png").is_file()  # streamed: only those images read
    in_memory, streamed = records
    assert in_memory["access"] == {"path": "memory", "reason": "data_path='memory'"}
    assert streamed["access"]["path"] == "stream" and streamed["access"]["reason"] == "data_path='stream'"
    assert streamed["content_sha256"] == in_memory["content_sha256"]
    assert streamed["class_counts"] == in_memory["class_counts"]
    predictions = np.load(stream.run_dir / "predictions.npz")
    assert predictions["y_prob"].shape == (24, 3)
    np.testing.assert_array_equal(predictions["y_true"], np.load(memory.run_dir / "predictions.npz")["y_true"])


def test_auto_streams_above_the_documented_size(tmp_path, monkeypatch):
    import lab.data.datasets

    path = tmp_path / "mine.npz"
    _write_npz(path)
    config = RunConfig(dataset=f"npz:{path}")
    assert config.data_path == "auto"
    assert streaming.choose_data_path(config)[0] == "memory"
    nbytes = lab.data.datasets.estimate_nbytes(f"npz:{path}")
    assert nbytes == 68 * 10 * 10 * 3
    monkeypatch.setattr(lab.data.datasets, "STREAM_ABOVE_BYTES", nbytes - 1)
    path_used, reason = streaming.choose_data_path(config)
    assert path_used == "stream" and "above" in reason
    assert streaming.choose_data_path(config.replace(data_path="memory"))[0] == "memory"
    # The registry's metadata alone: PathMNIST at 224 px is about 16 GB.
    assert lab.data.datasets.estimate_nbytes("pathmnist", size=224) == 107_180 * 224 * 224 * 3


def test_data_path_is_checked():
    with pytest.raises(ValueError, match="data_path must be one of 'auto', 'memory', 'stream'"):
        RunConfig(data_path="disk")
    with pytest.raises(ValueError, match="data_path='memory'"):
        RunConfig(data_path="memory", tfrecord_dir="records")


@pytest.mark.slow
def test_a_sweep_streams_its_data_without_loading_it(tmp_path, monkeypatch):
    """A sweep (and so the ablation, searches and transfer studies, which load the same way)
    reads a streamed configuration's data from the shards: the eager loader is never called."""
    import lab.data.datasets
    from lab.studies.sweep import run_sweep

    path = tmp_path / "mine.npz"
    _write_npz(path, n=(96, 24, 24), channels=1, classes=3, learnable=True)

    def eager(*args, **kwargs):
        raise AssertionError("the eager loader was called for a streamed sweep")

    monkeypatch.setattr(lab.data.datasets, "load_dataset", eager)
    base = RunConfig(**FAST, dataset=f"npz:{path}", data_path="stream")
    result = run_sweep(base, [{"name": "a", "learning_rate": 1e-3}, {"name": "b", "learning_rate": 3e-3}], name="s")
    assert [run.config["data"]["access"]["path"] for run in result.runs] == ["stream", "stream"]
