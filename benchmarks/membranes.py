"""U-Net's training as published on the generated membranes: the gain of elastic deformation and
of the weight map, each alone and together, and whether the elastic augmentation keeps ahead of
training.

    python benchmarks/membranes.py                        # 4 runs + throughput (~8 CPU minutes)
    python benchmarks/membranes.py --seeds 3 --elastic 2.5 --no-throughput   # 12 runs (~20 CPU minutes)
    python benchmarks/membranes.py --quick                # smoke run: 3 epochs per run
    python benchmarks/membranes.py --recipes baseline,published --epochs 80

**What it checks:** ``lab.tasks.segmentation.train_segmentation`` trains a U-Net on ``membranes`` (20
training images of 128x128, EM-like; the membrane holds about a fifth of the pixels) with the
combined loss (Dice + cross-entropy) and horizontal and vertical flips, then adds U-Net's elastic
deformation (``aug_elastic``, 3x3 grid), its weight map (``weight_map``, w0 = 10, sigma = 5), and
both (the published recipe). Target: **test membrane Dice >= 0.90 with the published recipe**.
It prints, per run, the test membrane Dice and IoU, the mean IoU, the cells recovered, the best
epoch, the wall and process CPU seconds, and ``others``, the cores other processes kept busy
meanwhile. With ``--seeds`` (``lab.studies.seeds``: a count from ``--seed``, or a list) every recipe runs
once per seed on the same generated images (``--seed`` draws them), and it prints per recipe the
mean membrane Dice and cells recovered with Student's t interval across seeds, and each recipe's
gain over the baseline: the mean per-seed difference, its paired t interval, the p-value adjusted
by Holm over the recipes, and a verdict (``lab.runs.confidence``; better or worse when the adjusted
p < 0.05, else within noise). The intervals cover the training's randomness (initialisation,
shuffling, augmentation), not the choice of the 5 test images.

Cells recovered: the fraction of the test images' true cells (connected regions of the true
mask's cell class) that the prediction holds as one region overlapping the cell with IoU >= 0.5.
A gap of membrane lost between two touching cells merges them into one region and loses both,
however few pixels it costs the membrane Dice: this is what U-Net's weight map is for.

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

from lab.studies import seeds as seeds_setting  # noqa: E402

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
    parser.add_argument("--weight-map-sigma", type=float, default=5.0,
                        help="weight_map_sigma of the weight-map recipes (pixels; the paper's 5 is for 512-px images)")
    parser.add_argument("--num-train", type=int, default=20)
    parser.add_argument("--target", type=float, default=0.9, help="test membrane Dice to reach (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the generated images, and the first "
                        "training seed of a --seeds count")
    parser.add_argument("--seeds", type=seeds_setting.parse_argument, default=None,
                        help="training seeds per recipe: a count (3: --seed, --seed + 1, ...) or a list (0,4,9)")
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
        import keras

        from lab.tasks.segmentation import train_segmentation

        print(f"device: {hardware.device_summary()}, {os.cpu_count()} cores")
        data = load_segmentation_dataset("membranes", seed=args.seed, num_train=args.num_train)
        epochs = 3 if args.quick else args.epochs
        common = dict(model="unet", depth=args.depth, filters=args.filters, loss="combined", epochs=epochs,
                      batch_size=args.batch_size, learning_rate=args.learning_rate, augment=True,
                      aug_flip="horizontal_and_vertical", monitor="val_mean_iou", early_stopping_patience=None,
                      save_model=False, seed=args.seed, verbose=0, tensorboard=False)
        seeds = seeds_setting.seed_list(args.seeds, base_seed=args.seed)
        rows = []
        # Seed by seed, every recipe within a seed: a run cut short still has paired seeds.
        for seed in seeds:
            for recipe in args.recipes.split(","):
                options = {key: (args.elastic if key == "aug_elastic" else value)
                           for key, value in RECIPES[recipe].items()}
                if options.get("weight_map"):
                    options["weight_map_sigma"] = args.weight_map_sigma
                waited = wait_until_quiet(args.max_other_load, args.wait_quiet)
                with LoadMeter([os.getpid()]) as meter:
                    cpu_start, wall_start = time.process_time(), time.perf_counter()
                    result = train_segmentation(data=data, dataset="membranes", name=f"benchmark-{recipe}",
                                                **{**common, "seed": seed}, **options)
                    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
                metrics = {**result.metrics, "cells_recovered": cells_recovered(result.model, data)}
                rows.append((recipe, seed, metrics, wall, cpu, meter.others, waited))
                print(f"{recipe} seed {seed}: membrane Dice {metrics['test_dice_membrane']:.3f}, IoU "
                      f"{metrics['test_iou_membrane']:.3f}, cells recovered {metrics['cells_recovered']:.3f}, "
                      f"{wall:.0f} s wall, {cpu:.0f} CPU s, others {meter.others:.2f}", flush=True)
                del result
                keras.backend.clear_session()

        print(f"\nU-Net depth {args.depth}, {args.filters} filters, {rows[-1][2]['params']:,} parameters, "
              f"{len(data.x_train)} training images of {data.input_shape} (generated with seed {args.seed}), "
              f"batch {args.batch_size}, {epochs} epochs, lr {args.learning_rate}, combined loss, flips; elastic "
              f"{args.elastic:g} px on a 3x3 grid; training seeds {', '.join(map(str, seeds))}")
        print(f"{'recipe':<12}{'seed':>5}{'membrane Dice':>14}{'membrane IoU':>13}{'mean IoU':>9}{'cells':>7}"
              f"{'best epoch':>11}{'wall s':>8}{'CPU s':>7}{'others':>7}")
        for recipe, seed, metrics, wall, cpu, others, waited in rows:
            print(f"{recipe:<12}{seed:>5}{metrics['test_dice_membrane']:>14.3f}{metrics['test_iou_membrane']:>13.3f}"
                  f"{metrics['test_mean_iou']:>9.3f}{metrics['cells_recovered']:>7.3f}"
                  f"{metrics.get('best_epoch', 0):>11}{wall:>8.0f}{cpu:>7.0f}{others:>7.2f}")
        summarize(rows, args.target)
        if not args.no_throughput:
            throughput(data, args)
    return 0


SCORES = {"test_dice_membrane": "membrane Dice", "cells_recovered": "cells recovered"}


def summarize(rows: list[tuple], target: float) -> None:
    """Per recipe the mean of each score across seeds with its t interval; per recipe but the
    baseline its gain with a paired t interval, Holm's adjusted p-value and a verdict."""
    from lab.runs.confidence import ALPHA, across_seeds, format_estimate, holm, seed_difference

    by_recipe: dict[str, dict[int, dict]] = {}
    for recipe, seed, metrics, *_ in rows:
        by_recipe.setdefault(recipe, {})[seed] = metrics
    cpu = {recipe: [row[4] for row in rows if row[0] == recipe] for recipe in by_recipe}
    others = [row[5] for row in rows]
    print(f"\nacross seeds (mean [95% t interval]); others {min(others):.2f}-{max(others):.2f} cores")
    print(f"{'recipe':<12}{'seeds':>6}{'membrane Dice':>24}{'cells recovered':>24}{'CPU s per run':>15}")
    for recipe, runs in by_recipe.items():
        estimates = [format_estimate(across_seeds([m[key] for m in runs.values()])) for key in SCORES]
        print(f"{recipe:<12}{len(runs):>6}{estimates[0]:>24}{estimates[1]:>24}{sum(cpu[recipe]) / len(runs):>15.0f}")
    published = by_recipe.get("published")
    if published:
        dice = across_seeds([m["test_dice_membrane"] for m in published.values()])
        low = dice.low if dice.has_interval else dice.value
        verdict = ("PASS" if low >= target else "FAIL" if (dice.high if dice.has_interval else dice.value) < target
                   else "UNDECIDED (the interval holds the target)")
        print(f"published recipe: membrane Dice {format_estimate(dice)}: {verdict} (target >= {target})")
    baseline = by_recipe.get("baseline")
    compared = [r for r in by_recipe if r != "baseline"]
    if not baseline or not compared:
        return
    print("\ngain over the baseline (mean per-seed difference [95% paired t interval], p adjusted by Holm over "
          "the recipes)")
    print(f"{'recipe':<12}{'score':<17}{'gain':>26}{'p':>8}{'p (Holm)':>10}  verdict")
    for key, label in SCORES.items():
        found = []
        for recipe in compared:
            common_seeds = [s for s in baseline if s in by_recipe[recipe]]
            found.append(seed_difference([baseline[s][key] for s in common_seeds],
                                         [by_recipe[recipe][s][key] for s in common_seeds], paired=True))
        for recipe, gain, adjusted in zip(compared, found, holm([g.p_value for g in found])):
            if adjusted is None:
                verdict, p_text = "one seed: no test", ("", "")
            else:
                verdict = "within noise"
                if adjusted < ALPHA and gain.value:
                    verdict = "better" if gain.value > 0 else "worse"
                p_text = (f"{gain.p_value:.2g}", f"{adjusted:.2g}")
            print(f"{recipe:<12}{label:<17}{format_estimate(gain, signed=True):>26}{p_text[0]:>8}{p_text[1]:>10}"
                  f"  {verdict}")


def cells_recovered(model, data) -> float:
    """The fraction of the test images' true cells that the model's prediction recovers: a
    connected region of predicted cell pixels overlapping the true cell with IoU >= 0.5 (at most
    one region can, so the match is one to one)."""
    import numpy as np
    from scipy import ndimage

    cell = data.class_names.index("cell")
    predicted = model.predict(data.x_test.astype(np.float32) / 255.0, verbose=0).argmax(axis=-1)
    found = total = 0
    for truth, prediction in zip(data.masks_test, predicted):
        # 4-connectivity (ndimage.label's default): a membrane one pixel wide on a diagonal separates.
        true_labels, n_true = ndimage.label(truth == cell)
        predicted_labels, n_predicted = ndimage.label(prediction == cell)
        overlap = np.bincount(true_labels.ravel() * (n_predicted + 1) + predicted_labels.ravel(),
                              minlength=(n_true + 1) * (n_predicted + 1)).reshape(n_true + 1, n_predicted + 1)
        true_sizes, predicted_sizes = overlap.sum(axis=1), overlap.sum(axis=0)
        iou = overlap / (true_sizes[:, None] + predicted_sizes[None, :] - overlap)
        found += int((iou[1:, 1:] >= 0.5).any(axis=1).sum())
        total += n_true
    return found / total if total else float("nan")


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
