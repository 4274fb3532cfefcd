"""The registry's table (lab.data.datasets.registry): one row per name, one lookup, estimates from the rows."""

import numpy as np
import pytest

import lab.data.datasets as datasets
from lab.data.datasets import estimate_nbytes, load_dataset, registry
from lab.data.datasets.registry import SOURCES, TASKS, find_source, list_sources, sources
from lab.data.datasets.sources import StreamSource
from lab.data.datasets.streaming import open_stream


def test_every_download_has_a_url_and_a_checksum():
    rows = sources()
    downloaded = [row for row in rows.values() if row.files]
    assert {row.kind for row in downloaded} == {"keras", "medmnist"}
    for row in downloaded:
        for file in row.files:
            assert file["url"].startswith("https://") and file["file"]
            assert len(file.get("md5", "")) == 32 or len(file.get("sha256", "")) == 64, (row.name, file)
    # A row that reads another's files names a row that has them.
    assert rows["cifar100_coarse"].base == "cifar100" and rows["cifar100"].files
    assert rows["pathmnist"].file_for(224)["file"] == "pathmnist_224.npz"


def test_rows_name_known_tasks_and_one_kind():
    for row in sources().values():
        assert row.tasks and set(row.tasks) <= set(TASKS), row
        assert row.is_prefix == (row.shown is not None), row
        if "classification" in row.tasks:
            assert row.kind in datasets.READ_KINDS, f"load_dataset has no reader of {row.kind!r}"


def test_a_fixed_name_wins_over_a_prefix_for_its_task():
    assert find_source("tfds:oxford_iiit_pet", "segmentation") == (SOURCES["tfds:oxford_iiit_pet"], None)
    assert find_source("tfds:oxford_iiit_pet") == (SOURCES["tfds:"], "oxford_iiit_pet")
    assert find_source(" CIFAR10 ")[0].name == "cifar10"
    # A prefix keeps the case of what follows it.
    assert find_source("Folder:/Data/Cells", "segmentation") == (SOURCES["folder:"], "/Data/Cells")
    assert find_source("coco:/a/b.json", "instance")[1] == "/a/b.json"
    assert find_source("shapes", "instance")[0].kind == "shapes"


@pytest.mark.parametrize("name,task,message", [
    ("cifar_10", "classification", r"Unknown dataset 'cifar_10'\. Did you mean 'cifar10'\? Available: digits, shapes"),
    ("folder:", "classification", r"Unknown dataset 'folder:'\..*folder:<path>"),
    ("npz:/x.npz", "segmentation", r"Unknown segmentation dataset 'npz:/x.npz'\. Available: shapes, "
                                   r"tfds:oxford_iiit_pet, membranes, folder:<path>\."),
    ("digits", "instance", r"Unknown instance dataset 'digits'\..* Available: shapes, shapes_easy, coco:<path>\."),
    ("organmnist3d", "segmentation", r"Unknown segmentation dataset"),
])
def test_an_unknown_name_lists_the_valid_ones(name, task, message):
    with pytest.raises(ValueError, match=message):
        find_source(name, task)


def test_unlisted_rows_are_found_but_not_offered():
    assert find_source("organmnist3d")[0].kind == "medmnist"  # its reader refuses it, saying why
    assert "organmnist3d" not in list_sources() and "pathmnist" in list_sources()
    with pytest.raises(ValueError, match="Unknown task 'detection'"):
        find_source("shapes", "detection")


def test_estimates_come_from_the_rows():
    assert estimate_nbytes("mnist") == 70_000 * 28 * 28
    assert estimate_nbytes("cifar100_coarse", limit=100) == 200 * 32 * 32 * 3
    assert estimate_nbytes("digits", limit=10) == 1797 * 8 * 8  # split by fractions: every image counts
    row = SOURCES["cifar10"]
    assert estimate_nbytes("cifar10") == sum(row.splits.values()) * row.sizes[0] ** 2 * row.channels
    assert estimate_nbytes("shapes") is None  # generated at any size and count
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        estimate_nbytes("nope")


def test_a_fixed_size_row_refuses_another_size():
    with pytest.raises(ValueError, match=r"'digits' has a fixed image size of 8x8, received size=16"):
        load_dataset("digits", size=16)


def test_loading_collects_the_stream_of_the_same_name(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for split, count in (("train", 40), ("val", 12), ("test", 12)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (count, 9, 9, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % 4)[:, None]
    np.savez_compressed(tmp_path / "own.npz", **arrays)
    name = f"npz:{tmp_path / 'own.npz'}"
    stream = datasets.open_source(name)
    assert isinstance(stream, StreamSource) and stream.splits["train"].count == 40
    loaded = load_dataset(name, num_classes=3, limit=6, seed=2)
    streamed = open_stream(name, num_classes=3, limit=6, seed=2)
    collected = streamed.collect()
    assert loaded.content_hash() == collected.content_hash()
    assert loaded.source == collected.source and loaded.source["loaded_as"] == name
    np.testing.assert_array_equal(loaded.x_train, collected.x_train)
    # The small sets are read whole: no stream of them.
    assert isinstance(datasets.open_source("digits"), datasets.Dataset)
    assert open_stream("digits") is None
    assert registry.SOURCES["digits"].kind not in datasets.STREAMED_KINDS


def test_the_rows_say_what_the_offline_sets_hold():
    from lab.data.datasets.segmentation import load_segmentation_dataset

    digits, shapes = load_dataset("digits"), load_dataset("shapes", limit=20)
    assert digits.num_classes == SOURCES["digits"].classes and digits.input_shape[-1] == SOURCES["digits"].channels
    assert sum(len(digits.split(s)[1]) for s in ("train", "val", "test")) == SOURCES["digits"].splits["all"]
    assert digits.input_shape[0] == SOURCES["digits"].fixed_size
    assert shapes.num_classes == SOURCES["shapes"].classes and shapes.input_shape[-1] == SOURCES["shapes"].channels
    assert load_segmentation_dataset("shapes", limit=20).num_classes == SOURCES["shapes"].classes + 1
