"""Training recipes on embedded real data (digits) and shapes: what closes the gap to the baselines.

    python benchmarks/recipes.py                       # the benchmark (see below for the time)
    python benchmarks/recipes.py --quick               # smoke run: 2 epochs on 200 images per split
    python benchmarks/recipes.py --datasets shapes --recipes e1,resnet18 --epochs 30

Every recipe trains for the same number of epochs (early stopping off; the best epoch by
validation loss is restored and tested, as in every run) with ``lab.training.train``, on

* ``digits``: scikit-learn's real handwritten digits, enlarged to 28x28 in the pipeline (as
  notebook 01's quick setting), 10 classes;
* ``shapes``: the generated 28x28 colour shapes, 6 imbalanced classes.

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

It prints one table: test accuracy, test macro AUC (one-vs-rest), the best epoch, training
seconds (the fit, without evaluation) and how many cores other processes kept busy meanwhile
(``others``: rows taken while that is high are not comparable). Runs are recorded in a
temporary reports folder, deleted at the end (``--reports-dir`` keeps them).

Time: the E1 CNN takes seconds per epoch on 2 cores; ResNet-18 at 28 px needs ~50 times its
compute per image (~0.45 G multiply-adds forward). Estimated from a timed training step, the
default 20 epochs take roughly 25-40 minutes on 2 quiet cores, almost all of it ResNet-18.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUIET_HELP, LoadMeter, wait_until_quiet  # noqa: E402

# E1's best configuration (notebook 01's parameters), without early stopping.
E1 = dict(model="cnn", normalization="batch", dropout_rate=0.5, augment=True, learning_rate=1e-4, optimizer="adam",
          batch_size=64)
# MedMNIST v2's ResNet-18 (28) recipe (experiments/MedMNIST2D/train_and_eval_pytorch.py).
RESNET18 = dict(model="resnet18", learning_rate=1e-3, optimizer="adam", batch_size=128, lr_schedule="step",
                augment=False)
# Notebook 01 does not flip digits in training (a mirrored digit is another symbol).
DATASETS = {"digits": dict(dataset="digits", pipeline_size=28, aug_flip=None),
            "shapes": dict(dataset="shapes", dataset_size=28)}
RECIPES = ("e1", "e1_cosine", "resnet18")


def recipe(name: str, args: argparse.Namespace) -> dict:
    """The configuration fields of one recipe."""
    if name == "e1":
        return dict(E1)
    if name == "e1_cosine":
        return {**E1, "lr_schedule": "cosine", "warmup_epochs": 1 if args.epochs > 1 else 0, "tta": "horizontal",
                "learning_rate": args.cosine_learning_rate or E1["learning_rate"]}
    if name == "resnet18":
        return dict(RESNET18)
    raise ValueError(f"Unknown recipe {name!r}; choose from {', '.join(RECIPES)}.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs, 200 images per split")
    parser.add_argument("--datasets", default="digits,shapes", help="comma-separated: digits, shapes")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {', '.join(RECIPES)}")
    parser.add_argument("--epochs", type=int, default=20, help="epochs of every recipe (default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    parser.add_argument("--cosine-learning-rate", type=float, default=None,
                        help="peak rate of the cosine recipe (default: E1's 1e-4)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reports-dir", default=None, help="keep the run records here (default: a temporary folder)")
    parser.add_argument("--max-other-load", type=float, default=0.5, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=60.0, help="seconds to wait for a quiet machine")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.limit = 2, args.limit or 200

    with tempfile.TemporaryDirectory() as tmp:
        reports = args.reports_dir or str(Path(tmp) / "reports")
        from lab import hardware
        from lab.records import to_markdown
        from lab.training import train

        import pandas as pd

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores; {args.epochs} epochs per recipe")
        rows = []
        for dataset in args.datasets.split(","):
            for name in args.recipes.split(","):
                config = {**DATASETS[dataset], **recipe(name, args), "epochs": args.epochs, "limit": args.limit,
                          "seed": args.seed, "early_stopping_patience": None, "verbose": 0, "save_model": False,
                          "reports_dir": reports, "name": f"{name}-{dataset}", "tags": ["benchmark-recipes"]}
                wait_until_quiet(args.max_other_load, args.wait_quiet)
                with LoadMeter([os.getpid()]) as meter:
                    metrics = train(config).metrics
                common = {"dataset": dataset, "epochs": metrics["epochs_run"], "best_epoch": metrics["best_epoch"],
                          "params": metrics["params"], "train_seconds": round(metrics["train_seconds"], 1),
                          "others": round(meter.others, 2)}
                if config.get("tta"):
                    rows.append({"recipe": "e1 + cosine", **common, "test_accuracy": metrics["test_accuracy_no_tta"],
                                 "test_macro_auc": metrics["test_macro_auc_no_tta"]})
                    rows.append({"recipe": "e1 + cosine + tta", **common, "test_accuracy": metrics["test_accuracy"],
                                 "test_macro_auc": metrics["test_macro_auc"]})
                else:
                    rows.append({"recipe": name.replace("resnet18", "resnet18 (28), MedMNIST recipe"), **common,
                                 "test_accuracy": metrics["test_accuracy"], "test_macro_auc": metrics["test_macro_auc"]})
                print(f"  {name} on {dataset}: test accuracy {metrics['test_accuracy']:.4f}, "
                      f"{metrics['train_seconds']:.1f} s", flush=True)
        columns = ["dataset", "recipe", "epochs", "best_epoch", "test_accuracy", "test_macro_auc", "train_seconds",
                   "params", "others"]
        print(to_markdown(pd.DataFrame(rows)[columns]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
