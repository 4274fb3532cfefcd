"""E7 on a CPU: what a light Mask R-CNN costs per step, and the mask AP it reaches in CPU minutes.

    python benchmarks/instance_segmentation.py                    # the benchmark (~10 minutes on 2 cores)
    python benchmarks/instance_segmentation.py --quick            # notebook 07's quick setting (~3 CPU minutes)
    python benchmarks/instance_segmentation.py --limit 100 --epochs 10
    python benchmarks/instance_segmentation.py --dataset shapes_easy --epochs 2 --lr-schedule cosine
    python benchmarks/instance_segmentation.py --dataset shapes_easy --epochs 3 --light-rpn --optimizer adam \
        --learning-rate 1e-3

Needs the instance-segmentation extra (``make setup-instance``).

**What it measures:** ``lab.tasks.instance.train_instance`` fine-tunes the quick setting's Mask R-CNN
(Model Garden's, ResNet-18-FPN, FPN and heads 64 wide, one head convolution, fc 256, 64 sampled
proposals, 128 px, batch 2, SGD at 1e-2 or ``--optimizer adam``, BatchNorm momentum 0.9, random weights: offline, no
checkpoint) on a generated instance set (``--dataset``: ``"shapes"``, 300/50/50 images, by default, or
its easy difficulty ``"shapes_easy"``, 240/16/16 images). It prints,
per epoch, the wall seconds, the cumulative CPU minutes of the process and the validation box and
mask AP, then the steady training step (wall seconds, tracing excluded), the test box and mask AP
of the restored best epoch, the whole run's wall and CPU minutes, and how many cores other
processes kept busy meanwhile (``others``: figures taken while it is high are not comparable).
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

LIGHT = dict(backbone="resnet18", pipeline_size=128, fpn_filters=64, head_convs=1, head_filters=64, fc_dims=256,
             sampled_rois=64, norm_momentum=0.9, weights=None, batch_size=2)
# A lighter RPN for square boxes (``--light-rpn``): one anchor shape and 200 proposals, not 3 and 1000.
LIGHT_RPN = dict(aspect_ratios=(1.0,), proposals=200)
# Notebook 07's quick run (its ``if quick:`` cell) on top of LIGHT.
QUICK = dict(dataset="shapes_easy", limit=None, epochs=2, optimizer="sgd", learning_rate=2e-2, lr_schedule=None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"notebook 07's quick setting: {QUICK}")
    parser.add_argument("--dataset", default="shapes", choices=("shapes", "shapes_easy"), help="the generated set")
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--lr-schedule", default=None, choices=("cosine", "step"), help="default: constant")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"), help="SGD with momentum 0.9, or Adam")
    parser.add_argument("--light-rpn", action="store_true", help=f"a lighter RPN for square boxes: {LIGHT_RPN}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-other-load", type=float, default=0.5, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=120.0, help="seconds to wait for a quiet machine")
    args = parser.parse_args()
    run = QUICK if args.quick else dict(dataset=args.dataset, limit=args.limit, epochs=args.epochs,
                                        optimizer=args.optimizer, learning_rate=args.learning_rate,
                                        lr_schedule=args.lr_schedule, **(LIGHT_RPN if args.light_rpn else {}))

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAB_REPORTS_DIR"] = str(Path(tmp) / "reports")
        os.environ["LAB_DATA_DIR"] = str(Path(tmp) / "data")
        from lab.system import hardware  # first: the kit keeps TensorFlow's start-up lines out of the output
        from lab.tasks.instance import train_instance

        import keras

        class CpuClock(keras.callbacks.Callback):
            """The process's CPU minutes at the end of every epoch."""

            def on_train_begin(self, logs=None):
                self.minutes = []

            def on_epoch_end(self, epoch, logs=None):
                self.minutes.append((time.process_time() - cpu_start) / 60)

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores")
        waited = wait_until_quiet(args.max_other_load, args.wait_quiet)
        clock = CpuClock()
        from lab.tasks.instance import task as instance_task

        log_line = instance_task.InstanceTask.log_line
        instance_task.InstanceTask.log_line = lambda self, n: keras.callbacks.CallbackList([log_line(self, n), clock])
        with LoadMeter([os.getpid()]) as meter:
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            result = train_instance(**run, seed=args.seed, early_stopping_patience=None, save_model=False, verbose=1,
                                    name="benchmark-e7-light", **LIGHT)
            wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
        metrics, history = result.metrics, result.history
        print(f"\nMask R-CNN {LIGHT}, {metrics['params']:,} parameters; {metrics['steps_per_epoch']} steps an epoch, "
              f"{run}")
        print(f"{'epoch':>5}{'wall s':>8}{'CPU min':>9}{'val box AP':>11}{'val mask AP':>12}")
        for epoch, row in history.iterrows():
            print(f"{epoch + 1:>5}{row['epoch_seconds']:>8.1f}{clock.minutes[epoch]:>9.2f}{row['val_box_ap']:>11.3f}"
                  f"{row['val_mask_ap']:>12.3f}")
        print(f"\nsteady training step: {metrics['seconds_per_step']:.3f} s wall (batch 2, 128 px)")
        print(f"best epoch {metrics['best_epoch']}: test box AP {metrics['test_box_ap']:.3f} (AP50 "
              f"{metrics['test_box_ap50']:.3f}), test mask AP {metrics['test_mask_ap']:.3f} (AP50 "
              f"{metrics['test_mask_ap50']:.3f})")
        print(f"whole run: {wall / 60:.2f} wall min, {cpu / 60:.2f} CPU min; others {meter.others:.2f} cores; "
              f"waited {waited:.0f} s for a quiet machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
