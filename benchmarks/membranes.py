"""U-Net's training as published on the generated membranes: the gain of elastic deformation and
of the weight map, each alone and together, and whether the elastic augmentation keeps ahead of
training.

    python benchmarks/membranes.py                        # 4 runs + throughput (~8 CPU minutes)
    python benchmarks/membranes.py --quick                # smoke run: 3 epochs per run
    python benchmarks/membranes.py --recipes baseline,published --epochs 80

**What it checks:** ``lab.tasks.segmentation.train_segmentation`` trains a U-Net on ``membranes`` (20
training images of 128x128, EM-like; the membrane holds about a fifth of the pixels) with the
combined loss (Dice + cross-entropy) and horizontal and vertical flips, then adds U-Net's elastic
deformation (``aug_elastic``, 3x3 grid), its weight map (``weight_map``, w0 = 10, sigma = 5), and
both (the published recipe). Target: **test membrane Dice >= 0.90 with the published recipe**.
It prints, per recipe, the test membrane Dice and IoU, the mean IoU, the best epoch, the wall
and process CPU seconds, and ``others``, the cores other processes kept busy meanwhile.

Then the throughput: the training pipeline with flips, and with flips and the elastic
deformation, iterated alone (batches/s), against the U-Net's training step (``train_on_batch``
on one cached batch): the augmentation keeps ahead when the pipeline's batches/s exceed the
steps/s, and it then costs nothing but its share of the cores.
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

# Each recipe's additions to the baseline (the combined loss, flips both ways).
RECIPES = {
    "baseline": {},
    "elastic": {"aug_elastic": 10.0},
    "weight_map": {"weight_map": True},
    "published": {"aug_elastic": 10.0, "weight_map": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 epochs per run, a short throughput test")
    parser.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated, of {', '.join(RECIPES)}")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--elastic", type=float, default=10.0, help="aug_elastic of the elastic recipes (pixels)")
    parser.add_argument("--num-train", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.9, help="test membrane Dice to reach (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-throughput", action="store_true", help="skip the throughput measurement")
    parser.add_argument("--max-other-load", type=float, default=0.5, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=30.0, help="seconds to wait for a quiet machine")
    args = parser.parse_args()
    unknown = sorted(set(args.recipes.split(",")) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; the recipes are {', '.join(RECIPES)}")

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAB_REPORTS_DIR"] = str(Path(tmp) / "reports")
        from lab.system import hardware
        from lab.data.datasets.segmentation import load_segmentation_dataset
        from lab.tasks.segmentation import train_segmentation

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores")
        data = load_segmentation_dataset("membranes", seed=args.seed, num_train=args.num_train)
        epochs = 3 if args.quick else args.epochs
        common = dict(model="unet", depth=args.depth, filters=args.filters, loss="combined", epochs=epochs,
                      batch_size=args.batch_size, learning_rate=args.learning_rate, augment=True,
                      aug_flip="horizontal_and_vertical", monitor="val_mean_iou", early_stopping_patience=None,
                      save_model=False, seed=args.seed, verbose=0, tensorboard=False)
        rows = []
        for recipe in args.recipes.split(","):
            options = {key: (args.elastic if key == "aug_elastic" else value) for key, value in RECIPES[recipe].items()}
            waited = wait_until_quiet(args.max_other_load, args.wait_quiet)
            with LoadMeter([os.getpid()]) as meter:
                cpu_start, wall_start = time.process_time(), time.perf_counter()
                result = train_segmentation(data=data, dataset="membranes", name=f"benchmark-{recipe}", **common,
                                            **options)
                wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
            rows.append((recipe, result.metrics, wall, cpu, meter.others, waited))
            metrics = result.metrics
            print(f"{recipe}: membrane Dice {metrics['test_dice_membrane']:.3f}, IoU {metrics['test_iou_membrane']:.3f}"
                  f", {wall:.0f} s", flush=True)

        print(f"\nU-Net depth {args.depth}, {args.filters} filters, {rows[-1][1]['params']:,} parameters, "
              f"{len(data.x_train)} training images of {data.input_shape}, batch {args.batch_size}, {epochs} "
              f"epochs, lr {args.learning_rate}, combined loss, flips; elastic {args.elastic:g} px on a 3x3 grid")
        print(f"{'recipe':<12}{'membrane Dice':>14}{'membrane IoU':>13}{'mean IoU':>9}{'best epoch':>11}"
              f"{'wall s':>8}{'CPU s':>7}{'others':>7}")
        for recipe, metrics, wall, cpu, others, waited in rows:
            print(f"{recipe:<12}{metrics['test_dice_membrane']:>14.3f}{metrics['test_iou_membrane']:>13.3f}"
                  f"{metrics['test_mean_iou']:>9.3f}{metrics.get('best_epoch', 0):>11}{wall:>8.0f}{cpu:>7.0f}"
                  f"{others:>7.2f}")
        published = [metrics for recipe, metrics, *_ in rows if recipe == "published"]
        if published:
            dice = published[0]["test_dice_membrane"]
            print(f"published recipe: membrane Dice {dice:.3f}: {'PASS' if dice >= args.target else 'FAIL'} "
                  f"(target >= {args.target})")
        if not args.no_throughput:
            throughput(data, args)
    return 0


def throughput(data, args) -> None:
    """Batches/s of the training pipeline with and without the elastic deformation, against the
    U-Net's training steps/s."""
    import keras
    import numpy as np
    import tensorflow as tf

    from lab.models import build_model
    from lab.tasks.segmentation.losses import make_loss
    from lab.tasks.segmentation.pipeline import make_joint_augmenter, make_segmentation_pipeline
    from lab.tasks.segmentation.weight_map import dataset_weight_maps

    # Enough images for several timed passes: the training images repeated.
    repeats = 2 if args.quick else 10
    images, masks = np.concatenate([data.x_train] * repeats), np.concatenate([data.masks_train] * repeats)
    weights = np.concatenate([dataset_weight_maps(data, "train")] * repeats)
    batches = len(images) // args.batch_size

    def batches_per_second(augmenter, weight_maps=None) -> float:
        pipeline = make_segmentation_pipeline(images, masks, training=True, batch_size=args.batch_size,
                                              augmenter=augmenter, seed=args.seed, weight_maps=weight_maps)
        for _ in pipeline:  # the first pass traces and fills the cache
            pass
        start = time.perf_counter()
        for _ in pipeline:
            pass
        return batches / (time.perf_counter() - start)

    rates = {}
    flips = make_joint_augmenter(flip="horizontal_and_vertical", seed=args.seed)
    elastic = make_joint_augmenter(flip="horizontal_and_vertical", elastic=args.elastic, seed=args.seed)
    for label, augmenter, weight_maps in (("flips", flips, None), ("flips + elastic", elastic, None),
                                          ("flips + elastic + weight map", elastic, weights)):
        wait_until_quiet(args.max_other_load, args.wait_quiet)
        with LoadMeter([os.getpid()]) as meter:
            rates[label] = (batches_per_second(augmenter, weight_maps), meter)
    model = build_model("unet", data.input_shape, data.num_classes, depth=args.depth, filters=args.filters)
    model.compile(optimizer="adam", loss=make_loss("combined"))
    x = tf.convert_to_tensor(images[:args.batch_size].astype(np.float32) / 255.0)
    y = tf.convert_to_tensor(masks[:args.batch_size])
    steps = 5 if args.quick else 30
    for _ in range(3):
        model.train_on_batch(x, y)
    wait_until_quiet(args.max_other_load, args.wait_quiet)
    with LoadMeter([os.getpid()]) as meter:
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)
        step_rate = steps / (time.perf_counter() - start)
    keras.backend.clear_session()
    print(f"\nthroughput, batch {args.batch_size} of {data.input_shape}: U-Net training {step_rate:.1f} steps/s "
          f"(others {meter.others:.2f})")
    print(f"{'pipeline':<30}{'batches/s':>10}{'x steps/s':>10}{'others':>7}")
    for label, (rate, pipeline_meter) in rates.items():
        print(f"{label:<30}{rate:>10.1f}{rate / step_rate:>10.1f}{pipeline_meter.others:>7.2f}")


if __name__ == "__main__":
    sys.exit(main())
