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
