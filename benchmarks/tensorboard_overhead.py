"""What TensorBoard logging costs a run: the same training with ``tensorboard=True`` and ``False``.

    python benchmarks/tensorboard_overhead.py            # the E1 CNN on BloodMNIST-shaped data, ~10 min on 2 cores
    python benchmarks/tensorboard_overhead.py --quick    # smoke run: a small MLP, 600 images, 3 epochs

After one untimed warm-up run, runs alternate (with, without, without, with, ...) so that a
machine getting busier does not favour one side, and each waits for the machine to be quiet
first (``common.wait_until_quiet``). It prints
each run's steady-state seconds per epoch (the record's ``seconds_per_epoch``: the first epoch,
with tracing, is left out) and its whole wall time (which includes writing the final images and
the HParams session), then the medians and their ratios, with/without. The logs are per-epoch
scalars only, so the per-epoch ratio should be 1 within noise. Two direct measurements follow,
which a busy machine disturbs less: the CPU time of the callback's work at the end of one epoch,
and the wall time of writing a run's final session and figures (``write_run_end``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import QUIET_HELP, LoadMeter, make_data, wait_until_quiet  # noqa: E402


def main() -> None:
    args = parse_args()
    samples = args.samples or (600 if args.quick else 12_000)
    epochs = args.epochs or (3 if args.quick else 5)
    from lab.data.datasets import from_arrays
    from lab.runs.training import train

    images, labels = make_data(samples + samples // 5)
    data = from_arrays(images[:samples], labels[:samples], images[samples:], labels[samples:], name="bloodmnist-shaped")
    model = dict(model="mlp", hidden_units=[32]) if args.quick else dict(model="cnn")
    print(f"{samples} training images {images.shape[1:]}, {epochs} epochs, {model}, {args.repeats} runs each side, "
          f"{os.cpu_count()} CPU cores", flush=True)
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="tensorboard-bench-") as temporary:
        # One untimed run first: the first run of a process also pays for imports and the first
        # tracing (TensorBoard's modules included, once per process), whichever side it is on.
        train(data=data, epochs=1, batch_size=64, early_stopping_patience=None, save_model=False, verbose=0,
              tensorboard=True, reports_dir=str(Path(temporary) / "reports"), **model)
        for repeat in range(args.repeats):
            for logged in (True, False) if repeat % 2 == 0 else (False, True):
                wait_until_quiet(args.max_other_load, args.wait_quiet)
                started = time.perf_counter()
                with LoadMeter([os.getpid()]) as meter:
                    result = train(data=data, epochs=epochs, batch_size=64, early_stopping_patience=None,
                                   save_model=False, verbose=0, tensorboard=logged, seed=args.seed,
                                   reports_dir=str(Path(temporary) / "reports"), **model)
                wall = time.perf_counter() - started
                per_epoch = result.metrics["seconds_per_epoch"]
                results[logged].append((per_epoch, wall))
                if logged:
                    logged_run = (result.run_dir, result.metrics)
                print(f"  tensorboard={str(logged):5s} {per_epoch:.4f} s/epoch, run {wall:.2f} s, "
                      f"others {meter.others:.2f} cores", flush=True)
        (with_epoch, with_wall), (without_epoch, without_wall) = (
            [statistics.median(v[i] for v in results[side]) for i in (0, 1)] for side in (True, False))
        print()
        print(f"{'':12s} {'s/epoch':>9s} {'run s':>8s}")
        print(f"{'with':12s} {with_epoch:9.4f} {with_wall:8.2f}")
        print(f"{'without':12s} {without_epoch:9.4f} {without_wall:8.2f}")
        print(f"{'ratio':12s} {with_epoch / without_epoch:9.3f} {with_wall / without_wall:8.3f}   "
              "(with / without, medians)")
        print()
        print(f"callback at the end of an epoch: {callback_cpu_ms(temporary):.2f} ms of CPU (median of 200)")
        run_dir, metrics = logged_run
        print(f"writing the final session and figures: {write_run_end_seconds(run_dir, metrics):.3f} s "
              "(median of 5)")


def callback_cpu_ms(temporary: str) -> float:
    """CPU milliseconds of the epoch callback's ``on_epoch_end`` with a classifier's five values."""
    import keras

    from lab.runs import tensorboard

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    callback = tensorboard.epoch_callback(Path(temporary) / "callback")
    callback.set_model(model)
    logs = {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.6, "val_accuracy": 0.7, "epoch_seconds": 1.0}
    callback.on_epoch_end(0, dict(logs))  # the event files are created on the first call
    times = []
    for epoch in range(1, 201):
        started = time.process_time()
        callback.on_epoch_end(epoch, dict(logs))
        times.append(time.process_time() - started)
    callback.close()
    return statistics.median(times) * 1000


def write_run_end_seconds(run_dir: Path, metrics: dict) -> float:
    """Wall seconds of ``lab.runs.tensorboard.write_run_end`` on a finished run (written again aside)."""
    import shutil

    from lab.runs import tensorboard
    from lab.runs.records import load_run

    config = load_run(run_dir).config
    times = []
    for _ in range(5):
        shutil.rmtree(run_dir / "tensorboard-copy", ignore_errors=True)
        (run_dir / "tensorboard-copy" / "plots").mkdir(parents=True)
        for png in (run_dir / "plots").glob("*.png"):
            shutil.copyfile(png, run_dir / "tensorboard-copy" / "plots" / png.name)
        started = time.perf_counter()
        tensorboard.write_run_end(run_dir / "tensorboard-copy", run_id=run_dir.name, config=config, metrics=metrics)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: an MLP, 600 images, 3 epochs")
    parser.add_argument("--samples", type=int, help="training images (default 12000; 600 with --quick)")
    parser.add_argument("--epochs", type=int, help="epochs per run (default 5; 3 with --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="runs on each side (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-other-load", type=float, default=0.3, help=QUIET_HELP)
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="seconds to wait for a quiet machine before each run (default %(default)s)")
    return parser.parse_args()


if __name__ == "__main__":
    main()
