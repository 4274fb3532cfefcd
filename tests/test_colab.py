"""The Colab path: the notebooks' install cell, the kit's lower bounds against Colab's versions,
and the Jupyter kernel every runner picks. `make test-colab` runs the cell for real."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from lab.studies.notebooks import notebooks

ROOT = Path(__file__).resolve().parent.parent


def _load_install_cell_module():
    spec = importlib.util.spec_from_file_location("install_cell", ROOT / "ci" / "install_cell.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


install_cell = _load_install_cell_module().install_cell
CELL = install_cell(notebooks()[0])


def test_every_notebook_carries_the_same_install_cell():
    # make test-colab runs the first notebook's cell; that tests them all only if they agree.
    assert len(notebooks()) > 1
    for path in notebooks():
        assert install_cell(path) == CELL, f"{path.name}: its install cell differs from {notebooks()[0].name}'s"


def test_install_cell_is_found_only_once(tmp_path):
    path = tmp_path / "nb.ipynb"
    path.write_text('{"cells": [{"cell_type": "code", "source": ["print(1)"]}]}')
    with pytest.raises(ValueError, match="found 0"):
        install_cell(path)


class _Pip:
    """Stands in for subprocess.run: records each pip command and the constraints it was given."""

    def __init__(self, fail_on: str | None = None):
        self.commands: list[list[str]] = []
        self.constraints: list[str] = []
        self.fail_on = fail_on

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        self.constraints = Path(command[command.index("-c") + 1]).read_text().splitlines()
        if self.fail_on and self.fail_on in command:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: Cannot install lab because these package "
                                               "versions have conflicting dependencies.\nnumpy==2.1.3")
        return subprocess.CompletedProcess(command, 0, "", "")


def _run_cell(monkeypatch, pip: _Pip, lab_installed: bool = False, repo: str | None = "git+https://example/lab.git",
              cell: str = CELL, colab: bool = False):
    real_find_spec = importlib.util.find_spec
    hidden = {"lab"} | (set() if colab else {"google.colab"})  # not installed, and (unless asked) not in Colab
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (None if name in hidden and not (lab_installed and name == "lab")
                                          else real_find_spec(name, *a)))
    monkeypatch.setattr(subprocess, "run", pip)
    if repo is None:
        monkeypatch.delenv("LAB_REPO", raising=False)
    else:
        monkeypatch.setenv("LAB_REPO", repo)
    exec(compile(cell, "<install cell>", "exec"), {"__name__": "__main__"})


def test_install_cell_pins_every_installed_package(monkeypatch):
    pip = _Pip()
    _run_cell(monkeypatch, pip)
    medmnist, kit = pip.commands
    assert medmnist[:3] == [sys.executable, "-m", "pip"] and medmnist[-2:] == ["--no-deps", "medmnist==3.0.2"]
    assert kit[-1] == "git+https://example/lab.git" and "--no-deps" not in kit
    pins = dict(line.split("==") for line in pip.constraints)
    # The packages whose replacement would need a restart, at exactly the versions this Python has.
    for name in ("tensorflow", "keras", "numpy", "pandas", "scikit-learn"):
        found = [key for key in pins if re.sub(r"[-_.]+", "-", key).lower() == name]
        assert len(found) == 1, name
        assert Version(pins[found[0]]) == Version(importlib.metadata.version(name))
    normalised = [re.sub(r"[-_.]+", "-", key).lower() for key in pins]
    assert len(normalised) == len(set(normalised)), "one pin per package"


def test_install_cell_stops_on_a_conflict_with_what_to_do(monkeypatch):
    with pytest.raises(RuntimeError) as error:
        _run_cell(monkeypatch, _Pip(fail_on="git+https://example/lab.git"))
    message = str(error.value)
    assert "conflicting dependencies" in message and "numpy==2.1.3" in message  # pip's own explanation
    assert "Restart" in message and "!pip install git+https://example/lab.git" in message


def test_install_cell_does_nothing_when_the_kit_is_installed(monkeypatch):
    pip = _Pip()
    _run_cell(monkeypatch, pip, lab_installed=True, repo=None)
    assert pip.commands == []


def test_install_cell_says_where_the_kit_can_come_from(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # nothing uploaded to the session
    with pytest.raises(RuntimeError) as error:
        _run_cell(monkeypatch, _Pip(), repo=None)
    message = str(error.value)
    for way in ("Upload the wheel", "MyDrive/lab/", "os.environ['LAB_REPO']", "[project.urls]"):
        assert way in message, way


def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_install_cell_installs_an_uploaded_wheel_without_lab_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "lab-0.1.0.tar.gz", 3)
    _touch(tmp_path / "lab-0.1.0-py3-none-any.whl", 1)
    newest = _touch(tmp_path / "lab-0.2.0-py3-none-any.whl", 2)
    pip = _Pip()
    _run_cell(monkeypatch, pip, repo=None)
    assert pip.commands[-1][-1] == f"./{newest.name}"  # a wheel before a source archive; the newest


def test_install_cell_installs_a_source_archive_kept_on_drive(monkeypatch, tmp_path):
    # The cell looks in Colab's Drive folder; here its path is a folder of the test's.
    drive = tmp_path / "MyDrive" / "lab"
    archive = _touch(drive / "lab-0.1.0.tar.gz", 1)
    monkeypatch.chdir(tmp_path)
    pip = _Pip()
    _run_cell(monkeypatch, pip, repo=None, cell=CELL.replace("/content/drive/MyDrive/lab", str(drive)))
    assert pip.commands[-1][-1] == str(archive)


def test_install_cell_mounts_drive_in_colab_to_find_the_archive(monkeypatch, tmp_path):
    import types

    drive = tmp_path / "MyDrive" / "lab"
    mounted = []

    def mount(point):
        mounted.append(point)
        _touch(drive / "lab-0.1.0-py3-none-any.whl", 1)

    colab_package = types.ModuleType("google.colab")
    colab_package.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google.colab", colab_package)
    if importlib.util.find_spec("google") is None:
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.chdir(tmp_path)
    pip = _Pip()
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: (None if name == "lab" else object() if name == "google.colab"
                                          else real_find_spec(name, *a)))
    monkeypatch.setattr(subprocess, "run", pip)
    monkeypatch.delenv("LAB_REPO", raising=False)
    exec(compile(CELL.replace("/content/drive/MyDrive/lab", str(drive)), "<install cell>", "exec"),
         {"__name__": "__main__"})
    assert mounted == ["/content/drive"]
    assert pip.commands[-1][-1] == str(drive / "lab-0.1.0-py3-none-any.whl")


def test_install_cell_uses_the_repository_url_by_default_and_lab_repo_overrides_it(monkeypatch, tmp_path):
    from lab.studies.notebooks import canonical

    monkeypatch.chdir(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    with_url = canonical(nb, "01-x.ipynb", "https://github.com/someone/lab").cells[0].source
    assert "LAB_URL = 'https://github.com/someone/lab'" in with_url
    pip = _Pip()
    _run_cell(monkeypatch, pip, repo=None, cell=with_url)
    assert pip.commands[-1][-1] == "git+https://github.com/someone/lab"
    pip = _Pip()
    _run_cell(monkeypatch, pip, repo="/a/folder", cell=with_url)
    assert pip.commands[-1][-1] == "/a/folder"


def test_every_install_cell_carries_the_repository_url_of_pyproject():
    from lab.studies.notebooks import repository_url

    assert f"\nLAB_URL = {repository_url()!r}\n" in CELL, "run `python -m lab.studies.notebooks format`"


def _colab_versions() -> dict[str, Version]:
    lines = (ROOT / "ci" / "colab-constraints.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {req.name: Version(next(iter(req.specifier)).version) for req in pins}


def test_no_lower_bound_sits_above_colabs_versions():
    colab = _colab_versions()
    assert {"tensorflow", "keras", "numpy"} <= set(colab)
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in map(Requirement, dependencies):
        if requirement.name in colab:
            assert requirement.specifier.contains(colab[requirement.name]), (
                f"pyproject.toml's {requirement} excludes Colab's {requirement.name}=={colab[requirement.name]}: "
                "pip would replace it and the runtime would need a restart")


def test_keras_bound_is_one_the_kits_training_works_with():
    # Before 3.7 the kit's default steps_per_execution breaks training (see pyproject.toml).
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    keras = next(Requirement(d) for d in dependencies if Requirement(d).name == "keras")
    assert not keras.specifier.contains("3.6.0") and keras.specifier.contains("3.7.0")


def test_make_nbval_and_batches_use_the_same_kernel():
    from lab.studies.batch import DEFAULT_KERNEL

    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^KERNEL := {DEFAULT_KERNEL}$", makefile, re.M)
    assert "--nbval-kernel-name $(KERNEL)" in makefile


def _register(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "kernels" / name
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(
        '{"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
        f'"display_name": "Python ({name})", "language": "python"}}')


def test_batches_use_the_kits_kernel_where_registered(tmp_path, monkeypatch):
    from lab.studies.batch import resolve_kernel

    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    _register(tmp_path, "lab")
    assert resolve_kernel(None) == "lab"
    assert resolve_kernel("python3") == "python3"


def test_batches_fall_back_to_python3_with_a_note(monkeypatch, capsys):
    from jupyter_client.kernelspec import KernelSpecManager

    from lab.studies.batch import resolve_kernel

    # As in Colab: only Python's own kernel (`make setup` has registered 'lab' for this venv).
    monkeypatch.setattr(KernelSpecManager, "find_kernel_specs", lambda self: {"python3": "/somewhere"})
    assert resolve_kernel(None) == "python3"
    assert "no Jupyter kernel named 'lab'" in capsys.readouterr().out


def test_batches_refuse_an_unregistered_kernel(tmp_path, monkeypatch):
    from lab.studies.batch import resolve_kernel

    with pytest.raises(ValueError, match=r"No Jupyter kernel named 'nope'; registered: .*python3"):
        resolve_kernel("nope")


def test_the_lane_notices_a_replaced_colab_package(tmp_path):
    spec = importlib.util.spec_from_file_location("check_versions", ROOT / "ci" / "check_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pins = tmp_path / "pins.txt"
    numpy = importlib.metadata.version("numpy")
    pins.write_text(f"# a comment\nnumpy=={numpy}\n\n")
    assert module.moved(str(pins)) == []
    pins.write_text("numpy==0.0.1\nno-such-package-here==1.0\n")
    assert module.moved(str(pins)) == [f"numpy {numpy} (wanted ==0.0.1)", "no-such-package-here missing (wanted ==1.0)"]
