"""`make run`'s job timed: the E1 ablation, every configuration with 3 seeds, and where its time goes.

    python benchmarks/make_run.py                    # the job as the Makefile's `run` target runs it
    python benchmarks/make_run.py --quick            # two configurations (a smoke run)
    python benchmarks/make_run.py --args "--workers 2 --seeds 1"   # other arguments of lab.studies.ablation

Target: at most 300 s from the command's start to its exit on the 2-core machine (the job time
of `make run`, without `make setup`). It prints the wall time, the CPU seconds of the job (the
command, its papermill children and their kernels; half of them is the least wall time two free
cores could take), the cores it used and the cores other processes used meanwhile, then where
the notebooks' time went, summed over every executed notebook (papermill's cell durations):
starting the kernel and importing the kit, the cells before training (data, figures), training
(the runs of every seed), the cells after it, and within training what the run records say
(each run's first epoch, its other epochs, and the rest: building, evaluation, the record).

The reports go to a temporary folder; nothing in the repository changes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import QUIET_HELP, busy_seconds, wait_until_quiet  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 300.0


def make_run_arguments() -> list[str]:
    """The arguments the Makefile's ``run`` target gives ``lab.studies.ablation`` (read, not repeated here)."""
    recipe = re.search(r"^run:.*\n\t.*-m lab\.ablation(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    if recipe is None:
        raise SystemExit("The Makefile has no `run` target running `python -m lab.studies.ablation`; pass --args.")
    return shlex.split(recipe.group(1))


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_job(arguments: list[str], reports: Path) -> dict[str, float]:
    """Runs ``python -m lab.studies.ablation ARGUMENTS`` once; its wall and CPU seconds, and the cores others used."""
    env = {**os.environ, "LAB_REPORTS_DIR": str(reports), "PYTHONPATH": str(ROOT)}
    cpu, busy, begin = children_cpu_seconds(), busy_seconds(), time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lab.studies.ablation", *arguments], env=env, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - begin
    own = children_cpu_seconds() - cpu  # the command and every descendant it waited for
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
        raise SystemExit(f"lab.studies.ablation {' '.join(arguments)} exited with {done.returncode}")
    others = max(busy_seconds() - busy - own, 0.0)
    return {"wall": wall, "cpu": own, "own_cores": own / wall, "other_cores": others / wall}


def breakdown(reports: Path) -> dict[str, float]:
    """Seconds summed over the executed notebooks and the run records (see the module docstring)."""
    parts = dict.fromkeys(("notebooks", "kernel start and imports", "data and figures", "training",
                           "after training", "first epochs", "other epochs", "runs' evaluation and records"), 0.0)
    notebooks = sorted((reports / "batches").glob("*/notebooks/*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        total = nb.metadata.get("papermill", {}).get("duration") or 0.0
        parts["notebooks"] += total
        cells = [(c.source, c.metadata.get("papermill", {}).get("duration") or 0.0)
                 for c in nb.cells if c.cell_type == "code"]
        training = next(i for i, (source, _) in enumerate(cells) if re.search(r"\btrain\(config", source))
        imports = next(i for i, (source, _) in enumerate(cells) if "from lab import" in source)
        parts["kernel start and imports"] += total - sum(d for _, d in cells) + cells[imports][1]
        parts["data and figures"] += sum(d for i, (_, d) in enumerate(cells) if imports < i < training or i < imports)
        parts["training"] += cells[training][1]
        parts["after training"] += sum(d for _, d in cells[training + 1:])
    for metrics in (reports / "runs").glob("*/metrics.json"):
        run = json.loads(metrics.read_text())
        first, per_epoch, epochs = run.get("seconds_first_epoch") or 0, run.get("seconds_per_epoch") or 0, \
            run.get("epochs_run") or 0
        parts["first epochs"] += first
        parts["other epochs"] += per_epoch * max(epochs - 1, 0)
    parts["runs' evaluation and records"] = max(parts["training"] - parts["first epochs"] - parts["other epochs"], 0)
    return {"executed notebooks": len(notebooks), "runs": len(list((reports / "runs").glob("*/metrics.json"))),
            **parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--args", help="lab.studies.ablation's arguments (default: the Makefile's `run` target's)")
    parser.add_argument("--quick", action="store_true",
                        help="only two configurations (adds --only 1-plain 2-batchnorm)")
    parser.add_argument("--max-other-load", type=float, default=0.3, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="seconds to wait for a quiet machine first")
    args = parser.parse_args()
    arguments = shlex.split(args.args) if args.args is not None else make_run_arguments()
    if args.quick:
        arguments += ["--only", "1-plain", "2-batchnorm"]
    waited = wait_until_quiet(args.max_other_load, args.wait_quiet)
    print(f"python -m lab.studies.ablation {' '.join(arguments)}  (waited {waited:.0f} s for a quiet machine)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        timing = time_job(arguments, Path(tmp) / "reports")
        parts = breakdown(Path(tmp) / "reports")
    met = "met" if timing["wall"] <= TARGET_SECONDS else "missed"
    print(f"\nwall {timing['wall']:.0f} s (target {TARGET_SECONDS:.0f} s: {met}), job CPU {timing['cpu']:.0f} s "
          f"(so at least {timing['cpu'] / 2:.0f} s on 2 free cores), cores: the job {timing['own_cores']:.2f}, others "
          f"{timing['other_cores']:.2f}")
    runs, notebooks = parts.pop("runs"), parts.pop("executed notebooks")
    print(f"{runs} runs in {notebooks} executed notebooks; seconds summed over them:")
    for name, seconds in parts.items():
        print(f"  {name:32s} {seconds:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
