"""Whether the instance-segmentation extra (TensorFlow Model Garden and its companions) is
installed, and how to install it: every module of ``lab.tasks.instance`` that needs it asks here."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

INSTALL_HINT = ("Install the instance-segmentation extra: `make setup-instance` in a clone of the kit, "
                "`pip install --no-deps -r requirements-instance.txt` in your environment, or, in Colab or any "
                "notebook, `import lab.tasks.instance; lab.tasks.instance.install_extra()`.")

# requirements-instance.txt's pins (a test keeps them equal). Installed without their declared
# dependencies: tf-models-official's would replace TensorFlow.
EXTRA_PINS = {"tf-models-official": "2.20.0", "tf-keras": "2.21.0", "gin-config": "0.5.0",
              "pycocotools": "2.0.11", "opencv-python-headless": "5.0.0.93"}
# The module each package brings.
_EXTRA_MODULES = {"official": "tf-models-official", "tf_keras": "tf-keras", "gin": "gin-config",
                  "pycocotools": "pycocotools", "cv2": "opencv-python-headless"}


def missing_extra() -> list[str]:
    """The packages of the instance-segmentation extra that are not installed (empty: all are)."""
    return [package for module, package in _EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]


def require_model_garden() -> None:
    """Raises ImportError, saying what is missing and how to install it, unless the extra is installed."""
    missing = missing_extra()
    if missing:
        raise ImportError(f"Instance segmentation (E7) needs TensorFlow Model Garden and its companions; "
                          f"not installed: {', '.join(missing)}. {INSTALL_HINT}")


def install_extra() -> list[str]:
    """Installs the packages of the extra that this Python lacks, each at its pin and without its
    declared dependencies, so nothing already installed moves (Colab's TensorFlow, Keras, NumPy,
    and its own tf-keras and OpenCV, which are kept at Colab's versions).

    Returns:
        The requirements installed (empty: the extra was complete).

    Raises:
        RuntimeError: pip failed (its message is included).
    """
    wanted = [f"{package}=={EXTRA_PINS[package]}" for package in missing_extra()]
    if wanted:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", *wanted],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            raise RuntimeError(f"pip install --no-deps {' '.join(wanted)} failed:\n{pip.stderr[-3000:]}")
        importlib.invalidate_caches()  # found without restarting the Python process
    return wanted
