"""Notebook figures: the quick suite's time, papermill's overhead per run, batch throughput.

    python benchmarks/notebooks.py            # all three
    python benchmarks/notebooks.py --quick    # fewer repetitions

1. Every notebook in notebooks/ executed once in its quick setting by papermill, one after the
   other (what nbval does in `make test`). Target: at most 10 minutes on the 2-core machine.
2. Overhead of one papermill run: a notebook whose only cell is `pass`, from the papermill call
   to its exit (kernel start, the first cell, shutdown), and inside it the time from the
   process start to the first cell.
3. Batch throughput: the same small training notebook run as a batch of 4 parameter sets with
   1 and with 2 workers (runs per minute, and the speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.studies.batch import run_batch, spec_from_dict  # noqa: E402
from lab.studies.notebooks import QUICK, notebooks  # noqa: E402


def papermill(source: Path, output: Path, parameters: dict | None = None) -> float:
    command = [sys.executable, "-m", "papermill", str(source), str(output), "-k", "python3", "--no-progress-bar",
               "-y", json.dumps(parameters or {}), "--cwd", str(source.parent)]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def notebook(path: Path, cells: list[str]) -> Path:
    nb = new_notebook()
    nb.cells = [new_code_cell(c) for c in cells]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions of the overhead measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["LAB_REPORTS_DIR"] = str(tmp / "reports")

        print("1. The notebook suite in its quick setting (papermill, sequential)")
        total = 0.0
        for path in notebooks():
            seconds = papermill(path, tmp / path.name, QUICK)
            total += seconds
            print(f"   {path.name:36s} {seconds:6.1f} s")
        print(f"   total                                {total:6.1f} s  ({total / 60:.1f} min; target <= 10 min)")

        print("\n2. Overhead of one papermill run (a notebook with one `pass` cell)")
        empty = notebook(tmp / "empty.ipynb", ["x = 1", "import os, time, psutil\n"
                                               "print(time.time() - psutil.Process(os.getpid()).create_time())"])
        walls, starts = [], []
        for i in range(2 if args.quick else 5):
            walls.append(papermill(empty, tmp / f"empty-out{i}.ipynb"))
            ran = nbformat.read(tmp / f"empty-out{i}.ipynb", as_version=4)
            starts.append(float(ran.cells[-1].outputs[0]["text"]))
        print(f"   papermill call, start to exit: median {statistics.median(walls):.2f} s "
              f"(min {min(walls):.2f}, max {max(walls):.2f}) over {len(walls)} runs")
        print(f"   kernel process start to the cell that reads it: median {statistics.median(starts):.2f} s")

        print("\n3. Batch throughput: 4 runs of a small training notebook (digits, MLP, 5 epochs)")
        train_nb = notebook(tmp / "train.ipynb", [
            "hidden = [32]\nseed = 0",
            "from lab.runs.training import train\n"
            "r = train(dataset='digits', model='mlp', hidden_units=hidden, epochs=5, seed=seed, verbose=0, save_model=False)\n"
            "print(r.status)"])
        rates = {}
        for workers in (1, 2):
            spec = spec_from_dict({"notebook": str(train_nb), "name": f"throughput-{workers}",
                                   "grid": {"seed": [0, 1, 2, 3]}, "workers": workers})
            started = time.perf_counter()
            result = run_batch(spec, reports_dir=tmp / f"reports-{workers}")
            seconds = time.perf_counter() - started
            assert all(r["status"] == "completed" for r in result.records)
            rates[workers] = 4 / seconds * 60
            print(f"   {workers} worker(s): {seconds:5.1f} s for 4 runs = {rates[workers]:.1f} runs/min")
        print(f"   speed-up with 2 workers: {rates[2] / rates[1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
