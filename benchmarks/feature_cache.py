"""Frozen-feature cache: head-only epochs on cached backbone features against the images through the backbone.

A transfer model with a frozen backbone (``unfreeze=0``) trains only its head. With
``feature_cache=None`` every epoch still pushes every image through the unchanging backbone; with
``feature_cache="memory"`` (or ``"disk"``) ``lab.runs.training`` computes the pooled backbone features
once (``lab.models.features``) and trains the head on them. Both are measured here in one run, through
``lab.runs.training.train`` as a course run calls it: same data, same model, same head initialisation,
same seed, same shuffling.

Three runs per backbone:

1. ``feature_cache=None``: the images go through the frozen backbone every epoch (and for evaluation).
2. ``feature_cache=<mode>`` with the cache empty: the features are extracted once (train, val and test
   splits), then the head trains on them. ``train_seconds`` includes the extraction.
3. The same run again: the cache hits, nothing is extracted (what a sweep over heads pays per run).

Figures: steady-state seconds per epoch (the kit's ``seconds_per_epoch``: epochs 2..N, validation
included) on each side and their ratio (target: cached at least 20 times faster); the training time of
N epochs with the cache fill included (the amortised ratio) and the epoch from which the cache has paid
for itself; the validation and test accuracy of both sides and their difference in points (target: at
most 0.5).

Without network there are no ImageNet weights: by default each backbone is pretrained here with
``lab.tasks.pretraining.pretrain_offline`` (shapes, 32 px; kept under ``data/pretrained/`` and reused), then
transferred to the target data. ``--weights none`` uses a random backbone (same speed, lower accuracy).

Run: ``python benchmarks/feature_cache.py`` (about 3-5 minutes on 2 cores, the first time a minute more for
the pretraining), ``--quick`` for a smoke run, ``--backbones resnet18,resnet50`` for several.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import QUIET_HELP, LoadMeter, wait_until_quiet  # noqa: E402

TARGET_SPEEDUP = 20.0
TARGET_POINTS = 0.5
SIDES = ("images", "cache fill", "cache hit")
SIDE_HELP = {"images": "feature_cache=None: the images through the frozen backbone every epoch",
             "cache fill": "cached features, cache empty: extracted once, then head-only epochs",
             "cache hit": "cached features again: the cache hits, nothing is extracted"}


def main() -> None:
    args = parse_args()
    input_size = args.input_size or (32 if args.quick else 64)
    epochs = args.epochs or (3 if args.quick else 5)
    limit = args.limit if args.limit is not None else (400 if args.quick else None)
    backbones = [name.strip() for name in args.backbones.split(",") if name.strip()]

    from lab.data.datasets import load_dataset
    from lab.models.features import clear_memory_cache, feature_cache_dir
    from lab.runs.training import train
    from lab.tasks.pretraining import pretrain_offline

    data = load_dataset(args.dataset, size=args.dataset_size, limit=limit, seed=args.seed)
    load_before = os.getloadavg()
    print(f"{data.name}: {len(data.y_train)} train / {len(data.y_val)} val / {len(data.y_test)} test images "
          f"{data.input_shape}, {data.num_classes} classes; resized to {input_size} px inside the model; "
          f"batch {args.batch_size}, {epochs} epochs, head: logits only, feature_cache={args.cache!r}; "
          f"{os.cpu_count()} CPU cores, load average {_load(load_before)}", flush=True)
    for side in SIDES:
        print(f"  {side + ':':11s} {SIDE_HELP[side]}")

    summaries = []
    with tempfile.TemporaryDirectory(prefix="feature-cache-bench-") as temporary:
        for backbone in backbones:
            weights = _weights(args, backbone, temporary, pretrain_offline)
            base = dict(model="transfer", backbone=backbone, weights=weights, backbone_input_size=input_size, unfreeze=0,
                        dataset=data.name, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
                        early_stopping_patience=None, save_model=False, verbose=0,
                        reports_dir=str(Path(temporary) / "reports"), name=f"feature-cache-{backbone}")
            data_dir = os.environ.get("LAB_DATA_DIR")
            if args.cache == "disk":
                # A fresh cache folder: a file left by an earlier run must not make the fill run a hit.
                os.environ["LAB_DATA_DIR"] = str(Path(temporary) / "data")
            clear_memory_cache()
            results = {}
            for side in SIDES:
                cache = None if side == "images" else args.cache
                for attempt in range(args.retries + 1):
                    if side == "cache fill":  # a retaken fill run must fill the cache again
                        clear_memory_cache()
                        for path in feature_cache_dir().glob("*.npz") if args.cache == "disk" else ():
                            path.unlink()
                    wait_until_quiet(args.max_other_load, args.wait_quiet)
                    with LoadMeter([os.getpid()]) as meter:
                        result = train(data=data, feature_cache=cache, tags=["benchmark", side], **base)
                    if meter.others <= args.max_other_load or attempt == args.retries:
                        break
                    print(f"  {backbone} {side}: other processes kept {meter.others:.2f} cores busy; taking it again",
                          flush=True)
                if result.status != "completed":  # stalled or diverged: timings still hold; the kit's checks fired
                    print(f"  {backbone} {side}: the run is recorded as {result.status} "
                          f"({result.metrics.get('divergence_reason')}); its figures are reported all the same",
                          flush=True)
                results[side] = (result, meter)
                print(f"  {backbone} {side}: {result.metrics['seconds_per_epoch']:.3f} s/epoch, "
                      f"run {meter.seconds:.1f} s, others {meter.others:.2f} cores", flush=True)
            if args.cache == "disk":  # back to the user's data folder (the next backbone's pretraining)
                os.environ.pop("LAB_DATA_DIR")
                if data_dir is not None:
                    os.environ["LAB_DATA_DIR"] = data_dir
            summaries.append(report(backbone, results, epochs, weights, args, data))
    load_after = os.getloadavg()

    print()
    print(f"{'backbone':10s} {'images s/ep':>11s} {'cached s/ep':>11s} {'ratio':>7s} {'amortised':>9s} "
          f"{'break-even':>10s} {'val diff':>8s} {'test diff':>9s}  verdicts")
    for s in summaries:
        print(f"{s['backbone']:10s} {s['images']:11.3f} {s['cached']:11.4f} {s['ratio']:6.1f}x {s['amortised']:8.1f}x "
              f"{s['break_even']:>10s} {s['val_diff']:+8.2f} {s['test_diff']:+9.2f}  speed {s['speed_verdict']}, "
              f"accuracy {s['accuracy_verdict']}")
    print(f"load average (1, 5, 15 min): {_load(load_before)} before, {_load(load_after)} after, on "
          f"{os.cpu_count()} cores")


def report(backbone: str, results: dict, epochs: int, weights: str | None, args, data) -> dict:
    """Prints one backbone's table, ratios and verdicts; returns its summary row."""
    images, fill, hit = (results[side][0].metrics for side in SIDES)
    transfer = images["transfer"]
    print()
    print(f"{backbone}: {transfer['backbone_params']:,} backbone parameters (frozen), head "
          f"{images['trainable_params']:,} trainable; weights: {weights or 'random'}")
    print(f"{'run':12s} {'cache':>5s} {'fill s':>7s} {'epoch 1 s':>9s} {'s/epoch':>8s} {'median':>8s} "
          f"{'train s':>8s} {'run s':>7s} {'best val':>8s} {'val acc':>8s} {'test acc':>8s} {'others':>6s}")
    for side in SIDES:
        metrics, meter = results[side][0].metrics, results[side][1]
        cache = metrics["feature_cache"]
        hit_text = "-" if isinstance(cache, str) else ("hit" if cache["hit"] else "miss")
        fill_seconds = 0.0 if isinstance(cache, str) else cache["seconds"]
        print(f"{side:12s} {hit_text:>5s} {fill_seconds:7.2f} {metrics['seconds_first_epoch']:9.3f} "
              f"{metrics['seconds_per_epoch']:8.4f} {_median_epoch(results[side][0]):8.4f} "
              f"{metrics['train_seconds']:8.2f} {meter.seconds:7.1f} "
              f"{100 * metrics['best_epoch_val_accuracy']:7.2f}% {100 * metrics['val_accuracy']:7.2f}% "
              f"{100 * metrics['test_accuracy']:7.2f}% {meter.others:6.2f}")
    print("(fill s: getting the features, extraction or cache look-up; s/epoch: mean of epochs 2..N (the kit's "
          "seconds_per_epoch), validation included; median: their median; train s: all epochs + fill; run s: the "
          "whole train() call, evaluation and plots included; others: mean cores other processes kept busy)")

    ratio = images["seconds_per_epoch"] / fill["seconds_per_epoch"]
    hit_ratio = images["seconds_per_epoch"] / hit["seconds_per_epoch"]
    median_ratio = _median_epoch(results["images"][0]) / _median_epoch(results["cache fill"][0])
    amortised = images["train_seconds"] / fill["train_seconds"]
    run_ratio = results["images"][1].seconds / results["cache fill"][1].seconds
    fill_seconds = fill["feature_cache"]["seconds"]
    break_even = _break_even(images, fill)
    projected = _projected(images, fill, args.project_epochs)
    val_diff = 100 * (fill["val_accuracy"] - images["val_accuracy"])
    test_diff = 100 * (fill["test_accuracy"] - images["test_accuracy"])
    best_val_diff = 100 * (fill["best_epoch_val_accuracy"] - images["best_epoch_val_accuracy"])
    speed_verdict = "PASS" if ratio >= TARGET_SPEEDUP else "NOT MET"
    accuracy_verdict = "PASS" if max(abs(val_diff), abs(test_diff)) <= TARGET_POINTS else "NOT MET"
    print(f"steady-state epoch: {images['seconds_per_epoch']:.3f} s through the backbone / "
          f"{fill['seconds_per_epoch']:.4f} s on cached features = {ratio:.1f}x "
          f"(medians: {median_ratio:.1f}x; cache-hit run: {hit_ratio:.1f}x)   target >= {TARGET_SPEEDUP:.0f}x: "
          f"{speed_verdict}")
    print(f"{epochs} epochs, cache fill included: {images['train_seconds']:.2f} s / {fill['train_seconds']:.2f} s "
          f"= {amortised:.1f}x amortised (fill {fill_seconds:.2f} s); whole run with evaluation: {run_ratio:.1f}x; "
          f"over {args.project_epochs} epochs (projected): {projected:.1f}x")
    print(f"the cache has paid for itself from epoch {break_even} on (fill + cached epochs <= epochs through the "
          f"backbone); the cache-hit run looked its features up in {hit['feature_cache']['seconds']:.2f} s "
          f"({'hit' if hit['feature_cache']['hit'] else 'MISS: the second run did not hit the cache'})")
    print(f"accuracy, cached - images: val {val_diff:+.2f} points, test {test_diff:+.2f} points "
          f"(best-epoch val {best_val_diff:+.2f}); one image is {100 / len(data.y_val):.2f} val / "
          f"{100 / len(data.y_test):.2f} test points   target within {TARGET_POINTS} points: "
          f"{accuracy_verdict}")
    same = (hit["val_accuracy"], hit["test_accuracy"]) == (fill["val_accuracy"], fill["test_accuracy"])
    print(f"cache-hit run reproduces the fill run's accuracy: {'yes' if same else 'NO'}")
    return {"backbone": backbone, "images": images["seconds_per_epoch"], "cached": fill["seconds_per_epoch"],
            "ratio": ratio, "amortised": amortised, "break_even": f"epoch {break_even}", "val_diff": val_diff,
            "test_diff": test_diff, "speed_verdict": speed_verdict, "accuracy_verdict": accuracy_verdict}


def _median_epoch(result) -> float:
    """Median wall seconds of epochs 2..N (less swayed than the mean by a stall on a busy machine)."""
    seconds = list(result.history["epoch_seconds"])
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def _break_even(images: dict, fill: dict) -> str | int:
    """The first epoch count n at which fill + n cached epochs take no longer than n epochs on images."""
    gain = images["seconds_per_epoch"] - fill["seconds_per_epoch"]
    if gain <= 0:
        return "never"
    head_start = (fill["feature_cache"]["seconds"] + fill["seconds_first_epoch"]) - images["seconds_first_epoch"]
    return max(1, math.ceil(head_start / gain) + 1)


def _projected(images: dict, fill: dict, epochs: int) -> float:
    """Training time of ``epochs`` epochs through the backbone over that on cached features (fill included)."""
    through = images["seconds_first_epoch"] + (epochs - 1) * images["seconds_per_epoch"]
    cached = fill["feature_cache"]["seconds"] + fill["seconds_first_epoch"] + (epochs - 1) * fill["seconds_per_epoch"]
    return through / cached


def _weights(args, backbone: str, temporary: str, pretrain_offline) -> str | None:
    if args.weights == "none":
        return None
    if args.weights != "offline":
        return args.weights
    print(f"  pretraining {backbone} offline on shapes at {args.pretrain_size} px, {args.pretrain_epochs} epochs "
          f"(reused from data/pretrained/ when there)...", flush=True)
    try:
        return str(pretrain_offline(backbone, dataset="shapes", input_size=args.pretrain_size,
                                    epochs=args.pretrain_epochs, limit=args.pretrain_limit, seed=args.seed,
                                    reports_dir=str(Path(temporary) / "pretrain")))
    except RuntimeError as error:  # a run that stalled or diverged (ResNet-50 from scratch on 600 images can)
        print(f"  {error}\n  {backbone}: random weights instead (the speed is the same; both sides still share "
              "them, so the accuracy comparison stands)", flush=True)
        return None


def _load(values) -> str:
    return " / ".join(f"{v:.2f}" for v in values)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", default="resnet18", help="comma-separated backbone names (default resnet18)")
    parser.add_argument("--weights", default="offline",
                        help="'offline' (pretrain each backbone here on shapes; the default), 'none' (random), "
                             "or a kit-saved .keras file / run folder")
    parser.add_argument("--dataset", default="digits", help="target data (default digits; shapes works too)")
    parser.add_argument("--dataset-size", type=int, help="image side for datasets that take one (shapes)")
    parser.add_argument("--limit", type=int, help="at most this many images per split (default all; 400 with --quick)")
    parser.add_argument("--input-size", type=int,
                        help="side the images are resized to inside the model (default 64; 32 with --quick; "
                             "224 on a GPU)")
    parser.add_argument("--epochs", type=int, help="epochs of each run (default 5; 3 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cache", choices=("memory", "disk"), default="memory",
                        help="the cached side's feature_cache (default memory; disk writes to a temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-size", type=int, default=32, help="pretraining input size (default 32)")
    parser.add_argument("--pretrain-epochs", type=int, default=4, help="pretraining epochs (default 4)")
    parser.add_argument("--pretrain-limit", type=int, default=600, help="pretraining images per split (default 600)")
    parser.add_argument("--project-epochs", type=int, default=30,
                        help="also project the amortised ratio to this many epochs (default 30, RunConfig's)")
    parser.add_argument("--max-other-load", type=float, default=0.3, help=QUIET_HELP)
    parser.add_argument("--retries", type=int, default=1, help="retakes per run at most (default 1)")
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help="before each run, wait up to this many seconds for quiet (default 30)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 32 px, 400 images per split, 3 epochs")
    return parser.parse_args()


if __name__ == "__main__":
    main()
