"""How good a U-Net gets on the embedded shapes set, and how many CPU minutes it takes.

    python benchmarks/segmentation.py                     # the benchmark (~2-3 minutes on 2 cores)
    python benchmarks/segmentation.py --quick             # smoke run: 300 images, 3 epochs
    python benchmarks/segmentation.py --losses crossentropy,dice,combined

**What it checks:** ``lab.tasks.segmentation.train_segmentation`` trains a U-Net (depth 3, 16 base
filters, ~0.5 M parameters) on ``shapes`` (1,200 training images of 32x32, 7 classes with the
background, 78% of the pixels background) and reaches a test mean IoU of **at least 0.9 within
5 minutes** on the 2-core machine, everything included (generating the data, building,
training, evaluating, writing the record). It prints, per loss: the test mean IoU, pixel
accuracy and per-class IoU, the epoch at which the validation mean IoU first reached the
target and the minutes until then, the wall minutes and the process's CPU minutes of the
whole run, and how many cores other processes kept busy meanwhile (``others``: figures taken
while that is high are not comparable).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUIET_HELP, LoadMeter, wait_until_quiet  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 300 training images, 3 epochs")
    parser.add_argument("--losses", default="combined", help="comma-separated: crossentropy, dice, combined")
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.9, help="mean IoU to reach (default %(default)s)")
    parser.add_argument("--budget-minutes", type=float, default=5.0, help="wall minutes allowed (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-other-load", type=float, default=0.5, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="seconds to wait for a quiet machine")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAB_REPORTS_DIR"] = str(Path(tmp) / "reports")
        from lab.system import hardware
        from lab.data.datasets.segmentation import load_segmentation_dataset
        from lab.tasks.segmentation import train_segmentation
        from lab.runs.evaluation import metric_key

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores")
        rows = []
        for loss in args.losses.split(","):
            waited = wait_until_quiet(args.max_other_load, args.wait_quiet)
            with LoadMeter([os.getpid()]) as meter:
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                options = dict(num_train=300, num_val=100, num_test=100) if args.quick else {}
                data = load_segmentation_dataset("shapes", seed=args.seed, **options)
                result = train_segmentation(
                    data=data, model="unet", depth=args.depth, filters=args.filters, loss=loss,
                    epochs=3 if args.quick else args.epochs, batch_size=args.batch_size,
                    learning_rate=args.learning_rate, steps_per_execution=args.steps_per_execution,
                    monitor="val_mean_iou", early_stopping_patience=None, save_model=False, seed=args.seed,
                    verbose=0, name=f"benchmark-{loss}")
                wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
            history, metrics = result.history, result.metrics
            reached = history.index[history["val_mean_iou"] >= args.target]
            epoch = int(reached[0]) + 1 if len(reached) else None
            to_target = float(history["epoch_seconds"].iloc[:epoch].sum()) / 60 if epoch else None
            rows.append((loss, metrics, epoch, to_target, wall / 60, cpu / 60, meter.others, waited))
            per_class = ", ".join(f"{name} {metrics['test_iou_' + metric_key(name)]:.3f}" for name in data.class_names)
            print(f"\n{loss}: per-class test IoU: {per_class}")

        print(f"\nU-Net depth {args.depth}, {args.filters} filters, {result.metrics['params']:,} parameters, "
              f"{len(data.x_train)} training images of {data.input_shape}, batch {args.batch_size}, "
              f"{args.epochs if not args.quick else 3} epochs, lr {args.learning_rate}")
        print(f"{'loss':<13}{'mean IoU':>9}{'pixel acc':>10}{'mean Dice':>10}{'epoch >= target':>16}"
              f"{'min to target':>14}{'wall min':>9}{'CPU min':>8}{'others':>7}  result")
        for loss, metrics, epoch, to_target, wall, cpu, others, waited in rows:
            passed = metrics["test_mean_iou"] >= args.target and wall <= args.budget_minutes
            print(f"{loss:<13}{metrics['test_mean_iou']:>9.3f}{metrics['test_pixel_accuracy']:>10.3f}"
                  f"{metrics['test_mean_dice']:>10.3f}{str(epoch or '-'):>16}"
                  f"{(f'{to_target:.2f}' if to_target else '-'):>14}{wall:>9.2f}{cpu:>8.2f}{others:>7.2f}  "
                  f"{'PASS' if passed else 'FAIL'} (target: mean IoU >= {args.target} within "
                  f"{args.budget_minutes:g} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
