"""Training recipes on embedded real data (digits) and shapes: what closes the gap to the baselines.

    python benchmarks/recipes.py                       # the benchmark (see below for the time)
    python benchmarks/recipes.py --quick               # smoke run: 2 epochs on 200 images per split
    python benchmarks/recipes.py --datasets shapes --recipes e1,resnet18 --epochs 30
    python benchmarks/recipes.py --datasets digits --recipes default,strong --epochs 40 --seeds 5
    python benchmarks/recipes.py --datasets digits_imbalanced --recipes default,strong --epochs 100 --seeds 5

Every recipe trains for the same number of epochs (early stopping off; the best epoch by
validation loss is restored and tested, as in every run) with ``lab.runs.training.train``, on

* ``digits``: scikit-learn's real handwritten digits, enlarged to 28x28 in the pipeline (as
  notebook 01's quick setting), 10 classes;
* ``shapes``: the generated 28x28 colour shapes, 6 imbalanced classes;
* ``digits_imbalanced``: a binary variant of digits (3 against 8, the pair the E1 CNN confuses
  most), 10% eights in training and validation, balanced at test: the shape of the chest images
  of issue 23 (10% of one class in training, more at test).

The recipes:

* ``e1``: E1's best configuration (notebook 01): the E1 CNN with BatchNorm, dropout 0.5,
  augmentation (rotations of up to 36 degrees; horizontal flips on shapes, none on digits, as
  notebook 01), Adam at 1e-4, batch 64.
* ``e1_cosine``: the same with ``lr_schedule="cosine"`` (one warm-up epoch, the same peak rate
  unless ``--cosine-learning-rate``) and ``tta="horizontal"``. It prints two rows from one run,
  ``e1 + cosine`` and ``e1 + cosine + tta``: TTA changes only the evaluation, so the first row
  is the run's ``*_no_tta`` numbers. On shapes the flip is one the model trained on; on digits
  it is not (a mirrored digit is another symbol), so the digits TTA row shows what TTA with a
  flip the data does not allow costs.
* ``resnet18``: MedMNIST's ResNet-18 (28) baseline recipe: ``model="resnet18"`` (3x3 stem, no
  max-pool, 11.2 M parameters), Adam at 1e-3, step decay x0.1 at 50% and 75% of the epochs,
  batch 128, no augmentation (MedMNIST v2's training script).
* ``default``: ``RunConfig``'s defaults (the E1 CNN, Adam at 1e-3, no augmentation).
* ``strong``: ``recipe="strong"`` (``lab.config.classification.RECIPES``: AdamW, cosine,
  label smoothing, mixup and cutmix, EMA, augmentation) on the same CNN. On the binary variant
  both also run with ``decision_threshold="validation"`` and report the accuracy at the
  validation threshold beside the 0.5 one.

With ``--seeds 3`` (or a list, ``0,4,9``) every recipe runs once per seed and a second table gives each score's
mean across the seeds with its 95% t interval (``lab.runs.confidence.across_seeds``).

It prints one table: test accuracy, test macro AUC (one-vs-rest), the best epoch, training
seconds (the fit, without evaluation), the run's wall and CPU seconds (with its evaluation) and
how many cores other processes kept busy meanwhile (``others``: rows taken while that is high are
not comparable), then the total cost and, per dataset, ``lab.runs.comparison.compare``'s verdict of
every recipe against the first (across seeds a paired t test; over the test images McNemar's
exact test and a paired bootstrap). Runs are recorded in a temporary reports folder, deleted at
the end (``--reports-dir`` keeps them).

The strong recipe needs more optimizer steps than the default (benchmarks/README.md): the
imbalanced variant's 138 training images are 3 steps an epoch, so it runs 100 epochs there.

Time: the E1 CNN takes seconds per epoch on 2 cores; ResNet-18 at 28 px needs ~50 times its
compute per image (~0.45 G multiply-adds forward). Estimated from a timed training step, the
default 20 epochs take roughly 25-40 minutes on 2 quiet cores, almost all of it ResNet-18.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from common import QUIET_HELP, LoadMeter, wait_until_quiet  # noqa: E402

from lab.studies.seeds import parse_argument, seed_list  # noqa: E402

# E1's best configuration (notebook 01's parameters), without early stopping.
E1 = dict(model="cnn", normalization="batch", dropout_rate=0.5, augment=True, learning_rate=1e-4, optimizer="adam",
          batch_size=64)
# MedMNIST v2's ResNet-18 (28) recipe (experiments/MedMNIST2D/train_and_eval_pytorch.py).
RESNET18 = dict(model="resnet18", learning_rate=1e-3, optimizer="adam", batch_size=128, lr_schedule="step",
                augment=False)
# Notebook 01 does not flip digits in training (a mirrored digit is another symbol).
DATASETS = {"digits": dict(dataset="digits", pipeline_size=28, aug_flip=None),
            "shapes": dict(dataset="shapes", dataset_size=28),
            "digits_imbalanced": dict(dataset="digits", pipeline_size=28, aug_flip=None,
                                      decision_threshold="validation")}
RECIPES = ("e1", "e1_cosine", "resnet18", "default", "strong")
# The binary variant of digits: these two classes, this share of the minority in training.
IMBALANCED_CLASSES, MINORITY_SHARE = (3, 8), 0.10


def digits_imbalanced(limit: int | None = None, seed: int = 0):
    """``digits_imbalanced``: 3 against 8, MINORITY_SHARE eights in train and validation, balanced test."""
    from lab.data.datasets import from_arrays, load_dataset

    data = load_dataset("digits")
    rng = np.random.default_rng(seed)

    def split(x, y, minority_share):
        """The split's threes and some of its eights: MINORITY_SHARE of the result, or as many as
        the threes when minority_share is None (balanced)."""
        majority = np.flatnonzero(y == IMBALANCED_CLASSES[0])
        minority = np.flatnonzero(y == IMBALANCED_CLASSES[1])
        if minority_share is None:
            count = min(len(majority), len(minority))
            majority = rng.choice(majority, size=count, replace=False)
        else:
            count = max(1, round(len(majority) * minority_share / (1 - minority_share)))
        chosen = np.concatenate([majority, rng.choice(minority, size=min(count, len(minority)), replace=False)])
        chosen = rng.permutation(chosen)[:limit]
        return x[chosen], (y[chosen] == IMBALANCED_CLASSES[1]).astype(np.int64)

    x_train, y_train = split(data.x_train, data.y_train, MINORITY_SHARE)
    x_val, y_val = split(data.x_val, data.y_val, MINORITY_SHARE)
    x_test, y_test = split(data.x_test, data.y_test, None)
    return from_arrays(x_train, y_train, x_test, y_test, x_val=x_val, y_val=y_val,
                       class_names=[str(c) for c in IMBALANCED_CLASSES], name="digits_imbalanced")


def recipe(name: str, args: argparse.Namespace) -> dict:
    """The configuration fields of one recipe."""
    if name == "e1":
        return dict(E1)
    if name == "e1_cosine":
        return {**E1, "lr_schedule": "cosine", "warmup_epochs": 1 if args.epochs > 1 else 0, "tta": "horizontal",
                "learning_rate": args.cosine_learning_rate or E1["learning_rate"]}
    if name == "resnet18":
        return dict(RESNET18)
    if name == "default":
        return {}
    if name == "strong":
        return {"recipe": "strong", "warmup_epochs": min(2, args.epochs - 1)}
    raise ValueError(f"Unknown recipe {name!r}; choose from {', '.join(RECIPES)}.")


def across_seeds_table(table):
    """Each (dataset, recipe)'s scores as the mean across seeds with its 95% t interval."""
    import pandas as pd

    from lab.runs.confidence import across_seeds, format_estimate

    summary = []
    for (dataset, name), group in table.groupby(["dataset", "recipe"], sort=False):
        row = {"dataset": dataset, "recipe": name, "seeds": len(group)}
        for key in ("test_accuracy", "test_macro_auc", "test_accuracy_at_val_threshold"):
            values = group[key].dropna()
            row[key] = format_estimate(across_seeds(values.tolist())) if len(values) else ""
        row["train_seconds_mean"] = round(float(group["train_seconds"].mean()), 1)
        summary.append(row)
    return pd.DataFrame(summary)


def comparison(run_dirs: list) -> str:
    """``lab.runs.comparison.compare`` of one dataset's runs against the first recipe's, as Markdown:
    across seeds a paired t test, over the test images McNemar's exact test (accuracy) and a
    paired bootstrap (AUC); "better" or "worse" only when both find it."""
    from lab.runs.comparison import compare
    from lab.runs.records import load_run

    return compare([load_run(path) for path in run_dirs]).markdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 200 images per split")
    parser.add_argument("--datasets", default="digits,shapes",
                        help="comma-separated: digits, shapes, digits_imbalanced")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {', '.join(RECIPES)}")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every recipe (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    parser.add_argument("--cosine-learning-rate", type=float, default=None,
                        help="peak rate of the cosine recipe (default: E1's 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=parse_argument, default=None,
                        help="run each recipe once per seed: a count from --seed (3) or a list (0,4,9)")
    parser.add_argument("--reports-dir", default=None, help="keep the run records here (default: a temporary folder)")
    parser.add_argument("--max-other-load", type=float, default=0.5, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="seconds to wait for a quiet machine before each run (0: do not wait)")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.limit = 2, args.limit or 200

    with tempfile.TemporaryDirectory() as tmp:
        reports = args.reports_dir or str(Path(tmp) / "reports")
        from lab.system import hardware
        from lab.runs.records import to_markdown
        from lab.runs.training import train

        import pandas as pd

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores; {args.epochs} epochs per recipe")
        rows, run_dirs = [], {}
        seeds = seed_list(args.seeds, base_seed=args.seed)
        for dataset in args.datasets.split(","):
            run_dirs[dataset] = []
            for seed in seeds:
                data = digits_imbalanced(args.limit, seed) if dataset == "digits_imbalanced" else None
                for name in args.recipes.split(","):
                    config = {**DATASETS[dataset], **recipe(name, args), "epochs": args.epochs, "limit": args.limit,
                              "seed": seed, "early_stopping_patience": None, "verbose": 0, "save_model": False,
                              "reports_dir": reports, "name": f"{name}-{dataset}", "tags": ["benchmark-recipes"]}
                    wait_until_quiet(args.max_other_load, args.wait_quiet)
                    with LoadMeter([os.getpid()]) as meter:
                        result = train(config, data=data)
                    metrics = result.metrics
                    run_dirs[dataset].append(result.run_dir)
                    common = {"dataset": dataset, "seed": seed, "epochs": metrics["epochs_run"],
                              "best_epoch": metrics["best_epoch"], "params": metrics["params"],
                              "train_seconds": round(metrics["train_seconds"], 1),
                              "wall_seconds": round(meter.seconds, 1),
                              "cpu_seconds": round(meter.own * meter.seconds, 1), "others": round(meter.others, 2),
                              "test_accuracy_at_val_threshold": metrics.get("test_accuracy_at_val_threshold",
                                                                            math.nan)}
                    if config.get("tta"):
                        rows.append({"recipe": "e1 + cosine", **common,
                                     "test_accuracy": metrics["test_accuracy_no_tta"],
                                     "test_macro_auc": metrics["test_macro_auc_no_tta"]})
                        rows.append({"recipe": "e1 + cosine + tta", **common,
                                     "test_accuracy": metrics["test_accuracy"],
                                     "test_macro_auc": metrics["test_macro_auc"]})
                    else:
                        rows.append({"recipe": name.replace("resnet18", "resnet18 (28), MedMNIST recipe"), **common,
                                     "test_accuracy": metrics["test_accuracy"],
                                     "test_macro_auc": metrics["test_macro_auc"]})
                    print(f"  {name} on {dataset}: test accuracy {metrics['test_accuracy']:.4f}, "
                          f"{metrics['train_seconds']:.1f} s", flush=True)
        columns = ["dataset", "recipe", "seed", "epochs", "best_epoch", "test_accuracy", "test_macro_auc",
                   "test_accuracy_at_val_threshold", "train_seconds", "wall_seconds", "cpu_seconds", "params", "others"]
        table = pd.DataFrame(rows)
        print(to_markdown(table[columns]))
        print(to_markdown(across_seeds_table(table)))
        print(f"cost: {table['wall_seconds'].sum():.0f} s wall, {table['cpu_seconds'].sum():.0f} CPU seconds in "
              f"{len(table)} runs; other processes kept {table['others'].mean():.2f} cores busy on average")
        for dataset, paths in run_dirs.items():
            print(f"\n# {dataset}\n")
            print(comparison(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
