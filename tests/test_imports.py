"""Import hygiene: no import cycles in ``lab``, and a configuration that needs no TensorFlow.

Import cycles make the order in which modules are first imported matter (a half-initialised
module raises ImportError or AttributeError depending on who came first) and hide layering
mistakes. The configuration must be importable without TensorFlow or Keras, so building or
validating a batch spec is fast. The graph comes from ``benchmarks/import_graph.py``, which
parses the sources with ``ast``; the layering check counts lazy imports (inside functions)
too, since a cycle hidden behind one still fails, only later and depending on call order.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_checker():
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "benchmarks" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def test_lab_has_no_import_cycles():
    cycles = checker.find_cycles(checker.import_graph(REPO / "lab", lazy=True))
    assert not cycles, "import cycles in lab:\n" + "\n".join("  " + " <-> ".join(c) for c in cycles)


def test_checker_finds_cycles_and_skips_lazy_and_type_checking_imports(tmp_path):
    files = {
        "__init__.py": "",
        "a.py": "from pkg import b\n",
        "b.py": "try:\n    from . import a\nexcept ImportError:\n    pass\n",
        "lazy.py": "def f():\n    from pkg import lazy_user\n",
        "lazy_user.py": "import pkg.lazy\n",
        "typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.typed_user import X\n",
        "typed_user.py": "from pkg.typed import *\n",
        "sub/__init__.py": "from pkg.sub.leaf import y\n",
        "sub/leaf.py": "y = 1\n",
    }
    for name, source in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(textwrap.dedent(source))
    graph = checker.import_graph(tmp_path / "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"}
    assert graph["pkg.lazy"] == set() and graph["pkg.typed"] == set()
    assert graph["pkg.sub.leaf"] == set()  # its own parent package is not an edge
    assert checker.find_cycles(graph) == [["pkg.a", "pkg.b"]]
    lazy = checker.import_graph(tmp_path / "pkg", lazy=True)
    assert lazy["pkg.lazy"] == {"pkg.lazy_user"} and lazy["pkg.typed"] == set()
    assert checker.find_cycles(lazy) == [["pkg.a", "pkg.b"], ["pkg.lazy", "pkg.lazy_user"]]
    assert checker.find_cycles({"x": {"x"}, "y": set()}) == [["x"]]


def test_config_imports_without_tensorflow():
    code = "import sys, lab.config; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", f"importing lab.config also imported {result.stdout.strip()}"


# Imports inside a function that point up, each one name looked up when it is needed:
UPWARD_LAZY = {
    # a mask folder's colour modes and options, listed by the folder loader that reads them
    ("lab.config.base", "lab.data.datasets.segmentation.mask_folders"),
    ("lab.config.segmentation", "lab.data.datasets.segmentation.mask_folders"),
    # a transfer model's backbone name, checked against the table that lives with its builder
    ("lab.config.classification", "lab.models.backbones"),
    # a segmentation run's test masks, read the way its task reads them
    ("lab.runs.comparison", "lab.tasks.segmentation.tasks"),
}


def allowed_upward(importer: str, imported: str) -> bool:
    """An import in UPWARD_LAZY, or of a package on its way (``from a.b.c import x`` imports a.b)."""
    return any(importer == a and (b == imported or b.startswith(imported + ".")) for a, b in UPWARD_LAZY)


def room_of(module: str) -> int:
    """The room's rank, bottom first (``checker.ROOMS``; a registry: the configurations')."""
    if module in checker.REGISTRIES:
        return 0
    parts = module.split(".")
    return checker.ROOMS.index(parts[1]) if len(parts) > 1 else len(checker.ROOMS)


def test_every_import_points_down_the_rooms():
    assert sorted(p.name for p in (REPO / "lab").iterdir() if p.is_dir() and p.name != "__pycache__") == \
        sorted(checker.ROOMS), "a folder of lab/ that is no room (or a room with no folder): update ROOMS and the docs"
    graph = checker.import_graph(REPO / "lab", lazy=True)
    eager = checker.import_graph(REPO / "lab", lazy=False)
    upward = sorted((a, b) for a, targets in graph.items() for b in targets
                    if a != "lab" and room_of(b) > room_of(a)
                    and (b in eager.get(a, ()) or not allowed_upward(a, b)))
    assert not upward, "imports that point up the rooms:\n" + "\n".join(f"  {a} -> {b}" for a, b in upward)
