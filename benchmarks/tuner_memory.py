"""Shows that a keras-tuner search's memory stays flat across trials.

Runs one ``lab.studies.tuning.search`` of N trials (30 by default) in this process: the E1 CNN on the
real digits, with filters, depth, normalisation, dropout, L2, learning rate and optimizer drawn
by keras-tuner's RandomSearch, one epoch each, so every trial builds a different model. After
every trial it prints the process's resident set size (RSS) and its peak so far
(``ru_maxrss``). Each trial is a whole ``lab.runs.training.train`` run (run record, plots, model file)
and ``train`` clears the Keras session first, so a long search should not accumulate graphs,
layers or optimizer state.

Target: the RSS after the last trial and the peak RSS of the whole search are both at most 1.10
times the RSS after the first trial. "start" is the RSS once TensorFlow is imported and the data
loaded; the first trial adds TensorFlow's and Keras' one-off state (kernels, thread pools). The
growth over the second half of the search (least-squares slope, MB per trial) is printed too;
it is noisy over 30 trials (the allocator settles over the first few dozen models of different
sizes). ``--keep-graphs`` leaves out ``lab.system.tf_memory.released_graphs`` to show what it fixes.

    python benchmarks/tuner_memory.py            # 30 trials, ~3 minutes on 2 cores
    python benchmarks/tuner_memory.py --quick    # 8 trials

The run records and the search folder go to a temporary directory, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Run from a checkout without installing: make ``import lab`` find the package next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_RATIO = 1.10
SPACE = {
    "filters": [8, 16, 32],
    "depth": [1, 2, 3],
    "normalization": ["none", "batch", "layer"],
    "dropout_rate": {"min": 0.0, "max": 0.5, "step": 0.1},
    "l2": [0.0, 1e-4],
    "learning_rate": {"log": [1e-4, 1e-2]},
    "optimizer": ["adam", "sgd", "rmsprop"],
}


def rss_mb() -> float:
    """The current resident set size, from /proc (Linux)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def slope(values: list[float]) -> float:
    """Least-squares growth per step."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, sum(values) / n
    return sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values)) / sum((i - mean_x) ** 2 for i in range(n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--quick", action="store_true", help="8 trials")
    parser.add_argument("--limit", type=int, default=300, help="images per split")
    parser.add_argument("--tuner", default="random", choices=("random", "bayesian", "hyperband"))
    parser.add_argument("--keep-graphs", action="store_true",
                        help="leave out lab.system.tf_memory.released_graphs around each trial (shows the leak it fixes)")
    args = parser.parse_args()
    trials = 8 if args.quick else args.trials

    workdir = Path(tempfile.mkdtemp(prefix="lab-tuner-memory-"))
    os.environ["LAB_REPORTS_DIR"] = str(workdir / "reports")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from lab.data.datasets import load_dataset
        from lab.studies.tuning import search
        from lab.studies.tuning import tuner as tuner_module
        from lab.studies.tuning.tuner import RunTuner

        if args.keep_graphs:
            import contextlib

            tuner_module.released_graphs = contextlib.nullcontext

        data = load_dataset("digits", limit=args.limit)
        start = rss_mb()
        rows: list[tuple[str, str, float | None, float, float, float]] = []
        began = time.perf_counter()
        original = RunTuner.on_trial_end

        def measured(self, trial):
            original(self, trial)
            rows.append((trial.trial_id, trial.status, trial.score, rss_mb(), peak_mb(), time.perf_counter() - began))
            row = rows[-1]
            score = "-" if row[2] is None else f"{row[2]:.3f}"
            print(f"{row[0]:>5}  {row[1]:<9}  {score:>7}  {row[3]:8.1f}  {row[4]:8.1f}  {row[5]:7.1f}", flush=True)

        RunTuner.on_trial_end = measured
        print(f"keras-tuner {args.tuner} search, {trials} trials, digits limit {args.limit}, 1 epoch each"
              + (", WITHOUT released_graphs" if args.keep_graphs else ""))
        print(f"start (TensorFlow imported, data loaded): RSS {start:.1f} MB\n")
        print("trial  status     val_acc   RSS MB   peak MB   elapsed s")
        search({"dataset": "digits", "model": "cnn", "dense_units": 32, "epochs": 1, "batch_size": 64,
                "early_stopping_patience": None, "verbose": 0},
               SPACE, tuner=args.tuner, max_trials=trials, max_epochs=2, name="memory", data=data, verbose=0)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    resident = [r[3] for r in rows]
    peak = max(r[4] for r in rows)
    ratio, peak_ratio = resident[-1] / resident[0], peak / resident[0]
    growth = slope(resident[len(resident) // 2:])
    print(f"\ntrials: {len(rows)}; RSS after the first {resident[0]:.1f} MB, after the last {resident[-1]:.1f} MB: "
          f"last/first {ratio:.3f} (target <= {TARGET_RATIO})")
    print(f"peak RSS over the search {peak:.1f} MB: peak/first {peak_ratio:.3f} (target <= {TARGET_RATIO}); "
          f"start {start:.1f} MB; growth over the second half {growth:+.2f} MB/trial")
    ok = ratio <= TARGET_RATIO and peak_ratio <= TARGET_RATIO
    print("target met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
