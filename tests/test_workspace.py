"""lab.system.colab: Colab's workspace on Google Drive, tested offline with a stand-in for google.colab.drive."""

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest

from lab.system import colab, paths


class _Drive:
    """Stands in for google.colab.drive: mounting makes MyDrive under the mount point."""

    def __init__(self):
        self.mounts: list[str] = []

    def mount(self, mount_point: str) -> None:
        self.mounts.append(mount_point)
        (Path(mount_point) / "MyDrive").mkdir(parents=True, exist_ok=True)


@pytest.fixture
def colab_session(tmp_path, monkeypatch):
    """A kernel where ``google.colab.drive`` imports (the stand-in); HOME and the kit's folders
    are the test's, and restored afterwards."""
    drive = _Drive()
    if importlib.util.find_spec("google") is None:  # protobuf's namespace package, where installed
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    package = types.ModuleType("google.colab")
    package.drive = types.ModuleType("google.colab.drive")
    package.drive.mount = drive.mount
    monkeypatch.setitem(sys.modules, "google.colab", package)
    monkeypatch.setitem(sys.modules, "google.colab.drive", package.drive)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(paths.DATA_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.REPORTS_DIR_ENV, raising=False)
    return drive


def test_outside_colab_the_workspace_changes_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.colab", None)  # import google.colab raises ImportError
    monkeypatch.setenv(paths.REPORTS_DIR_ENV, "/somewhere/reports")
    before = dict(os.environ)
    assert colab.in_colab() is False
    assert colab.workspace() is None
    assert dict(os.environ) == before


def test_in_colab_data_and_reports_go_to_drive(colab_session, tmp_path):
    mount = tmp_path / "drive"
    found = colab.workspace(mount_point=mount)
    assert colab_session.mounts == [str(mount)]
    root = mount / "MyDrive" / "lab"
    assert found == colab.Workspace(root=root, data=root / "data", reports=root / "reports")
    assert paths.data_dir() == (root / "data").resolve() and paths.reports_dir() == (root / "reports").resolve()
    assert paths.runs_dir().is_dir()
    # Keras' weight cache is on Drive too, so ImageNet weights are not downloaded after a reset.
    cache = Path.home() / ".keras" / "models"
    assert cache.is_symlink() and cache.resolve() == (root / "data" / "keras-models").resolve()


def test_after_a_reset_the_existing_folder_is_reused(colab_session, tmp_path, capsys):
    mount = tmp_path / "drive"
    colab.workspace(mount_point=mount)
    earlier_run = paths.runs_dir() / "20260101-000000-cnn-digits-abcd"
    earlier_run.mkdir()
    (paths.data_dir() / "bloodmnist.npz").write_bytes(b"cached")
    capsys.readouterr()
    # A reset: a new kernel (environment variables gone) on the same Drive, already mounted.
    os.environ.pop(paths.DATA_DIR_ENV)
    os.environ.pop(paths.REPORTS_DIR_ENV)
    again = colab.workspace(mount_point=mount)
    assert colab_session.mounts == [str(mount)]  # mounted already: not asked again
    assert earlier_run.is_dir() and (again.data / "bloodmnist.npz").read_bytes() == b"cached"
    assert paths.runs_dir() == earlier_run.parent.resolve()
    assert "1 runs from earlier sessions" in capsys.readouterr().out


def test_a_batch_started_again_on_drive_resumes(colab_session, tmp_path):
    """What resuming rests on: a batch's committed jobs are read from the Drive folder."""
    from lab.studies.batch import batch_dir, committed_jobs

    colab.workspace(mount_point=tmp_path / "drive")
    folder = batch_dir("e1-ablation")
    assert folder.is_relative_to((tmp_path / "drive" / "MyDrive" / "lab" / "reports").resolve())
    assert committed_jobs(folder) == {}


def test_weights_downloaded_before_the_call_are_left_where_they_are(colab_session, tmp_path):
    cache = Path.home() / ".keras" / "models"
    cache.mkdir(parents=True)
    (cache / "resnet.h5").write_bytes(b"weights")
    colab.workspace(mount_point=tmp_path / "drive")
    assert not cache.is_symlink() and (cache / "resnet.h5").exists()


def test_a_drive_that_cannot_be_mounted_says_what_to_do(colab_session, tmp_path, monkeypatch):
    def refuse(mount_point):
        raise ValueError("mount failed")

    monkeypatch.setattr(sys.modules["google.colab.drive"], "mount", refuse)
    with pytest.raises(RuntimeError, match=r"could not be mounted .*mount failed.*allow access"):
        colab.workspace(mount_point=tmp_path / "drive")
    assert paths.REPORTS_DIR_ENV not in os.environ


@pytest.mark.parametrize("folder", ["", "/content/lab", "../elsewhere"])
def test_a_folder_outside_mydrive_is_refused(colab_session, folder):
    with pytest.raises(ValueError, match=f"received folder={folder!r}"):
        colab.workspace(folder)


def test_the_device_report_says_how_to_get_a_gpu_in_colab_only(colab_session, monkeypatch):
    from lab.system import hardware

    monkeypatch.setattr(hardware, "gpus", lambda: [])
    assert colab.device_report() == f"device: cpu. {colab.NO_GPU_HINT}"
    assert "Runtime > Change runtime type" in colab.NO_GPU_HINT
    monkeypatch.setitem(sys.modules, "google.colab", None)
    assert colab.device_report() == "device: cpu"


def test_the_device_report_names_the_gpu_and_its_precision(monkeypatch):
    import tensorflow as tf

    from lab.system import hardware

    gpu = types.SimpleNamespace(name="/physical_device:GPU:0")
    monkeypatch.setattr(hardware, "gpus", lambda: [gpu])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"device_name": "Tesla T4", "compute_capability": (7, 5)})
    assert colab.device_report() == ("device: 1x GPU: Tesla T4 (compute capability 7.5); mixed_precision='auto' "
                                     "trains in mixed_float16 here")


def test_the_tensorboard_cell_is_skipped_where_nobody_looks_and_finds_the_program(monkeypatch, tmp_path):
    monkeypatch.setenv(colab.TENSORBOARD_INLINE_ENV, "0")  # batches, nbval, lab.studies.notebooks record
    assert colab.tensorboard_inline() is False
    monkeypatch.delenv(colab.TENSORBOARD_INLINE_ENV)
    monkeypatch.delenv("TENSORBOARD_BINARY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # a kernel of a venv that was not activated
    assert colab.tensorboard_inline() is True
    beside = Path(sys.executable).parent / "tensorboard"
    assert os.environ.get("TENSORBOARD_BINARY") == (str(beside) if beside.exists() else None)
