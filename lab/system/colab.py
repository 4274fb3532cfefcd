"""Colab as home: runs and downloads kept on Google Drive, and which device trains.

A Colab runtime's disk is lost on every reset (the idle timeout, the 12-hour limit). In Colab,
``workspace()`` mounts Google Drive and points the kit's data and reports folders (``lab.system.paths``)
into ``MyDrive/lab/``, so that:

* every run record, sweep, batch and search is written to Drive, and a batch or sweep started
  again after a reset finds its finished runs there and resumes (an existing folder is reused);
* downloads are cached there too: BloodMNIST, TFDS datasets and (through ``~/.keras/models``)
  Keras' ImageNet weights are fetched once, not after every reset.

Elsewhere (JupyterLab, papermill batches, tests) it does nothing, so every notebook's setup cell
calls it. The environment variables it sets are inherited by the kernels a batch starts.
``device_report()`` is the setup cell's line on the device, with how to get a GPU in Colab.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from pathlib import Path

from lab.system import paths

DRIVE_MOUNT = "/content/drive"  # where Colab mounts Google Drive; "MyDrive" is the user's own folder
DRIVE_FOLDER = "lab"
KERAS_MODELS = Path(".keras") / "models"  # keras.utils.get_file's cache for pretrained weights, under ~
NO_GPU_HINT = ("This Colab runtime has no GPU: choose Runtime > Change runtime type > T4 GPU, then run the "
               "notebook again from the top (runs already on Drive are kept).")


@dataclasses.dataclass(frozen=True)
class Workspace:
    """The Drive folders a Colab session works in."""

    root: Path
    data: Path
    reports: Path


def in_colab() -> bool:
    """Whether this kernel runs in Google Colab (its ``google.colab`` package can be imported)."""
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def workspace(folder: str = DRIVE_FOLDER, *, mount_point: str | os.PathLike = DRIVE_MOUNT) -> Workspace | None:
    """In Colab, keeps runs and downloads on Google Drive; elsewhere does nothing.

    Mounts Drive (Colab asks for access the first time in a session) unless it is mounted, then
    sets ``LAB_DATA_DIR`` and ``LAB_REPORTS_DIR`` to ``MyDrive/<folder>/data`` and
    ``.../reports`` and links Keras' weight cache there. Calling it again is harmless.

    Args:
        folder: the folder inside ``MyDrive`` (created if missing, reused if there).
        mount_point: where Drive is mounted (Colab's ``/content/drive``).

    Returns:
        The folders used, or None outside Colab (nothing changed).

    Raises:
        ValueError: ``folder`` is empty, absolute or leaves ``MyDrive``.
        RuntimeError: Drive could not be mounted (with what to do).
    """
    parts = Path(folder).parts
    if not parts or Path(folder).is_absolute() or ".." in parts:
        raise ValueError(f"folder must be a folder inside MyDrive such as 'lab' or 'courses/lab', received "
                         f"folder={folder!r}.")
    try:
        from google.colab import drive
    except ImportError:
        return None
    mount_point = Path(mount_point)
    if not (mount_point / "MyDrive").is_dir():
        try:
            drive.mount(str(mount_point))
        except Exception as error:  # Colab raises its own errors (access refused, a timeout)
            raise RuntimeError(
                f"Google Drive could not be mounted at {mount_point} ({type(error).__name__}: {error}). Run the "
                "cell again and allow access, or delete the line lab.system.colab.workspace(): runs then stay on this "
                "runtime's disk, and a reset loses them.") from error
    root = mount_point / "MyDrive" / folder
    found = Workspace(root=root, data=root / "data", reports=root / "reports")
    os.environ[paths.DATA_DIR_ENV] = str(found.data)
    os.environ[paths.REPORTS_DIR_ENV] = str(found.reports)
    paths.data_dir()  # both created now, so the message below is true before the first run
    runs = paths.runs_dir()
    _link_keras_cache(found.data / "keras-models")
    earlier = sum(1 for child in runs.iterdir() if child.is_dir())
    print(f"Runs and downloads are kept on Google Drive, in {root}"
          + (f" ({earlier} runs from earlier sessions there)." if earlier else "."))
    return found


def _link_keras_cache(target: Path) -> None:
    """Makes ``~/.keras/models`` a link to ``target``, where it is not a folder with files already
    (this session's downloads are then left where they are)."""
    cache = Path.home() / KERAS_MODELS
    target.mkdir(parents=True, exist_ok=True)
    if cache.is_symlink():
        if cache.resolve() == target.resolve():
            return
        cache.unlink()
    elif cache.is_dir():
        if any(cache.iterdir()):
            return
        cache.rmdir()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.symlink_to(target, target_is_directory=True)


def device_report() -> str:
    """The device that trains, as the setup cell prints it: the GPUs with their compute capability
    and what ``mixed_precision="auto"`` means on them, or the CPU (with how to switch the
    runtime to a GPU, in Colab)."""
    import tensorflow as tf

    from lab.system import hardware

    found = hardware.gpus()
    if not found:
        return "device: cpu" + (f". {NO_GPU_HINT}" if in_colab() else "")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in found]
    capabilities = ", ".join(f"{name} (compute capability {major}.{minor})"
                             for name, (major, minor) in zip(names, hardware.gpu_capabilities()))
    return (f"device: {hardware.device_summary()}: {capabilities}; mixed_precision='auto' trains in "
            f"{hardware.policy_name('auto')} here")


# Set to "0" where a notebook runs with nobody to look at it (batches, nbval, `lab.studies.notebooks record`):
# each %tensorboard would start a TensorBoard server that outlives the kernel.
TENSORBOARD_INLINE_ENV = "LAB_TENSORBOARD_INLINE"


def tensorboard_inline() -> bool:
    """Whether a notebook's ``%tensorboard`` cell opens TensorBoard (not where ``LAB_TENSORBOARD_INLINE=0``).

    The magic starts the ``tensorboard`` program found on the PATH, which a kernel of a virtual
    environment that was not activated (JupyterLab started as ``.venv/bin/jupyter lab``) lacks:
    the one beside this Python is then named in ``TENSORBOARD_BINARY``, where the magic looks first.
    """
    if os.environ.get(TENSORBOARD_INLINE_ENV, "1") == "0":
        return False
    beside = Path(sys.executable).parent / "tensorboard"
    if "TENSORBOARD_BINARY" not in os.environ and shutil.which("tensorboard") is None and beside.exists():
        os.environ["TENSORBOARD_BINARY"] = str(beside)
    return True
