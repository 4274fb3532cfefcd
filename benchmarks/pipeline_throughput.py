"""Does the kit's input pipeline keep up? Batches/s of lab.data.pipeline alone against training steps/s.

The pipeline is ``lab.data.pipeline.make_pipeline(training=True, batch_size=64)`` over BloodMNIST-shaped
random arrays (11,959 images, 28x28x3 uint8, 8 classes), without augmentation and with
``make_augmenter(flip="horizontal", rotation=0.1)`` (the course's default augmentation). It is
iterated from Python, batch after batch, with nothing else to do: the rate at which it can deliver.
"pipeline+augment, before" is the augmentation as lab.data.pipeline applied it before it became
stateless: the Keras layers called on one batch at a time, drawing from their own seed state.

Training is the E1 CNN (``lab.models.cnn`` defaults) compiled as ``lab.runs.training`` compiles it,
trained with no input pipeline in the way: ``model.fit`` on batches made once and cached as float
tensors, and a loop of ``model.train_on_batch`` over the same tensors. The faster of the two is the
rate the pipeline must beat; the target is a pipeline at least 10 times faster than training, so
that feeding the model costs at most a tenth of an epoch even if nothing overlapped.

Measurements are taken in rounds (pipeline, pipeline with augmentation, fit, train_on_batch, then
again), each after waiting for the machine to go quiet, and the median of the rounds is reported.

Run: ``python benchmarks/pipeline_throughput.py`` (about 2 minutes on 2 cores), ``--quick`` for a
smoke run.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import CLASSES, IMAGE_SHAPE, QUIET_HELP, SAMPLES, LoadMeter, make_data, wait_until_quiet  # noqa: E402

TARGET_RATIO = 10.0


def main() -> None:
    args = parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    samples = args.samples or (2_048 if args.quick else SAMPLES)

    import tensorflow as tf

    from lab.config import RunConfig
    from lab.models.losses import SparseCategoricalCrossentropy
    from lab.models import build_model
    from lab.data.pipeline import make_augmenter, make_pipeline
    from lab.config.optimizers import make_optimizer
    from lab.runs.runner import seed_everything

    config = RunConfig(model="cnn", batch_size=args.batch_size)
    seed_everything(config.seed, config.deterministic)
    images, labels = make_data(samples, config.seed)
    common = dict(training=True, batch_size=config.batch_size, input_scaling=config.input_scaling,
                  cache=config.cache, seed=config.seed, deterministic=config.deterministic)
    augmenter = make_augmenter(flip="horizontal", rotation=0.1, seed=config.seed)
    stateful = make_augmenter(flip="horizontal", rotation=0.1, seed=config.seed)
    no_autotune, autotune_on = tf.data.Options(), tf.data.Options()
    no_autotune.autotune.enabled, autotune_on.autotune.enabled = False, True
    pipelines = {
        "pipeline": make_pipeline(images, labels, **common),
        "pipeline+augment": make_pipeline(images, labels, augmenter=augmenter, **common),
        # lab.data.pipeline before its augmentation became stateless: the Keras layers called one batch at
        # a time, drawing from their own seed state (the same stages, then that map, then prefetch).
        "pipeline+augment, before": make_pipeline(images, labels, **common).map(
            lambda x, y: (stateful(x, training=True), y), num_parallel_calls=1, deterministic=True
        ).prefetch(tf.data.AUTOTUNE),
        # lab.data.pipeline turns tf.data's autotuner off (see training_speed.py); what it would deliver with it on.
        "pipeline, autotune on": make_pipeline(images, labels, **common).with_options(autotune_on),
        "pipeline+augment, autotune on": make_pipeline(images, labels, augmenter=augmenter,
                                                       **common).with_options(autotune_on),
    }
    steps = -(-samples // config.batch_size)

    model = build_model(config.model, IMAGE_SHAPE, CLASSES, **config.model_options())
    model.compile(optimizer=make_optimizer(config.optimizer, config.learning_rate), metrics=["accuracy"],
                  loss=SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
                  jit_compile=config.jit_compile)
    # One epoch of batches, made once, as float tensors: training with no input pipeline.
    batches = [(tf.constant(x), tf.constant(y)) for x, y in pipelines["pipeline"]]
    cached = tf.data.Dataset.from_tensor_slices(
        (tf.stack([x for x, _ in batches[:-1]]), tf.stack([y for _, y in batches[:-1]]))
    ).with_options(no_autotune)  # the full batches (the last, smaller one left out): the rate is per step.
    # Autotune off: with it on, tearing down each epoch's iterator can stall (see training_speed.py).
    fit_steps = len(batches) - 1

    def iterate(dataset) -> int:
        count = 0
        for _ in dataset:
            count += 1
        return count

    def fit_epoch() -> int:
        model.fit(cached, epochs=1, verbose=0, shuffle=False)
        return fit_steps

    def train_on_batch_epoch() -> int:
        for x, y in batches:
            model.train_on_batch(x, y)
        return len(batches)

    measures = {
        **{name: (lambda dataset=dataset: iterate(dataset)) for name, dataset in pipelines.items()},
        "train: fit (cached tensors)": fit_epoch,
        "train: train_on_batch": train_on_batch_epoch,
    }
    print(f"{samples} images {IMAGE_SHAPE} uint8, batch {config.batch_size} ({steps} batches an epoch), "
          f"{os.cpu_count()} CPU cores; 1 warm-up + {rounds} timed epochs of each, taken in turn", flush=True)
    for measure in measures.values():  # warm-up: fills the caches, traces the functions
        measure()

    rates: dict[str, list[float]] = {name: [] for name in measures}
    loads: dict[str, list[float]] = {name: [] for name in measures}
    waited, retaken = 0.0, 0
    for round_index in range(rounds):
        for name, measure in measures.items():
            for attempt in range(args.retries + 1):
                waited += wait_until_quiet(args.max_other_load, args.wait_quiet)
                with LoadMeter([os.getpid()]) as meter:
                    count = measure()
                if meter.others <= args.max_other_load or attempt == args.retries:
                    break
                retaken += 1
            rates[name].append(count / meter.seconds)
            loads[name].append(meter.others)
        print(f"  round {round_index + 1}/{rounds}: "
              + ", ".join(f"{name} {rates[name][-1]:.0f}/s" for name in measures), flush=True)
    print(f"  waited {waited:.0f} s for other processes to go quiet; measurements retaken because they did not: "
          f"{retaken}")

    medians = {name: statistics.median(values) for name, values in rates.items()}
    print()
    print(f"{'what':32s} {'median /s':>10s} {'min /s':>8s} {'max /s':>8s} {'ms each':>8s} {'others':>7s}")
    for name in measures:
        print(f"{name:32s} {medians[name]:10.1f} {min(rates[name]):8.1f} {max(rates[name]):8.1f} "
              f"{1000 / medians[name]:8.2f} {statistics.mean(loads[name]):7.2f}")
    print("(batches/s for the pipeline, steps/s for training; others: mean cores that other processes kept busy)")
    print()
    training = max(medians["train: fit (cached tensors)"], medians["train: train_on_batch"])
    for name in pipelines:
        ratio = medians[name] / training
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(f"ratio {name + ' / training:':40s} {medians[name]:5.0f} batches/s / {training:.1f} steps/s = {ratio:5.1f}  "
              f"(target >= {TARGET_RATIO:.0f}: {verdict})")
    print(f"augmentation now / before: {medians['pipeline+augment'] / medians['pipeline+augment, before']:.2f}x "
          f"the batches/s (medians)")
    # Summed up: what the pipeline would add to an epoch if none of it overlapped with training.
    for name in pipelines:
        print(f"{name + ':':32s} {steps / medians[name]:.2f} s of pipeline work an epoch against "
              f"{steps / training:.2f} s of training")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="timed epochs of each measurement (default 5; 2 with --quick)")
    parser.add_argument("--samples", type=int, help=f"training images (default {SAMPLES}; 2048 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-other-load", type=float, default=0.3, help=QUIET_HELP)
    parser.add_argument("--retries", type=int, default=2, help="retakes per measurement at most (default 2)")
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help="before each measurement, wait up to this many seconds for quiet (default 30)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2048 images, 2 rounds")
    return parser.parse_args()


if __name__ == "__main__":
    main()
