"""Steady-state epoch time of the E1 CNN: the kit (Keras/TensorFlow) against the same network in PyTorch.

Data: BloodMNIST-shaped random arrays (11,959 training images, 28x28x3 uint8, 8 classes). Random
pixels are fine for speed: nothing in either framework's step depends on the values.

Kit side: ``lab.models.cnn`` with its defaults, compiled by ``lab.runs.training.compile_model`` as every
run is (optimizer, smoothed sparse cross-entropy, accuracy, ``jit_compile`` and
``steps_per_execution`` from ``RunConfig``), seeded by ``seed_everything``, fed by
``lab.data.pipeline.make_pipeline(training=True)`` and trained by ``model.fit`` with the callbacks
``lab.runs.training`` installs that matter for speed (``EpochTimer``, and ``DivergenceMonitor``, whose
per-batch check makes Keras run the callbacks synchronously). Every value a configuration below
does not name is ``RunConfig()``'s default, so the "default" row follows the kit when its defaults
change. Only training is timed: no validation pass.

PyTorch side: the same layers and parameter count (printed for both), Adam and cross-entropy, a
``torch.utils.data.DataLoader(shuffle=True, num_workers=0)`` over a ``TensorDataset`` of the same
uint8 arrays, scaled to float per batch as the kit does, ``torch.set_num_threads`` at the core
count (2 here). ``num_workers=0`` because a loader process would compete with the 2 compute
threads for the 2 cores, and indexing in-memory tensors is cheap (``torch_workers1`` measures it).

How it measures: every configuration runs in its own process (thread settings, oneDNN and op
determinism are process-wide). The processes take turns: in each round every one of them trains a
block of epochs in one ``model.fit`` call (or loop), so that load from something else on the machine
falls on all of them alike; before each block the parent waits for the machine to go quiet, and it
takes a block again if other processes were busy during it (see common.py). The first epoch of
each block is not timed: in the first block it traces and compiles, and in every block it follows a
pause. The timed epochs run back to back as in a real ``model.fit``, each timed from the previous
epoch's end to its own, so an epoch includes making its iterator and tearing down the last one.

"outside s" is the part of an epoch spent outside its batches: mostly making the epoch's tf.data
iterator and tearing down the previous one. With tf.data autotuning on (TensorFlow's default, which
lab.data.pipeline has turned off since it was measured here: see "kit_before" and "autotune_on") that
teardown sometimes blocks until the autotuner's next wake-up, 10 * (2**k - 1) ms after the iterator
was made (0.63 s, 1.27 s, ..., 5.11 s, 10.23 s, ...), which can add most of an epoch; "stalls"
counts the epochs where the outside part took over 0.25 s. Because of them a configuration's epoch
times can be bimodal: read the mean beside the median.

Run: ``python benchmarks/training_speed.py`` (about 20 minutes on 2 cores), ``--quick`` for a
smoke run, ``--configs default,torch`` for a subset, ``--list`` for every configuration,
``--profile default`` for where one epoch of a kit configuration spends its time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CLASSES, IMAGE_SHAPE, QUIET_HELP, SAMPLES, LoadMeter, make_data, wait_until_quiet

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.8
STALL_SECONDS = 0.25
PROTOCOL = "@@"  # prefix of the lines a worker writes for the parent; anything else is ignored

# Each configuration changes the kit's default path in one way; "kit_before" is the kit before
# commit 7ba1f40 (tf.data autotuning on, steps_per_execution=1), the defaults this benchmark first
# measured. "kind" picks the worker; the other keys are read by it.
CONFIGS: dict[str, dict] = {
    "default": {"kind": "kit", "about": "the kit as lab.runs.training runs it (RunConfig defaults, model.fit)"},
    "kit_before": {"kind": "kit", "tfdata": "autotune_on", "steps_per_execution": 1,
                   "about": "the kit before 7ba1f40: tf.data autotune on, steps_per_execution=1"},
    "autotune_on": {"kind": "kit", "tfdata": "autotune_on",
                    "about": "tf.data Options().autotune.enabled=True over the kit's pipeline"},
    "steps_per_execution_1": {"kind": "kit", "steps_per_execution": 1, "about": "compile(steps_per_execution=1)"},
    "steps_per_execution_64": {"kind": "kit", "steps_per_execution": 64, "about": "compile(steps_per_execution=64)"},
    "repeat_steps": {"kind": "kit", "tfdata": "autotune_on", "steps_per_execution": 1, "data": "repeat",
                     "about": "kit_before + .repeat() and fit(steps_per_epoch=...): one iterator for all epochs"},
    "nondeterministic": {"kind": "kit", "deterministic": False,
                         "about": "deterministic=False: no op determinism, tf.data may reorder"},
    "xla": {"kind": "kit", "jit_compile": True, "deterministic": False,
            "about": "jit_compile=True (XLA; the kit requires deterministic=False for it)"},
    "bf16": {"kind": "kit", "mixed_precision": True, "needs": "bf16",
             "about": "mixed_precision=True: Keras mixed_bfloat16, oneDNN bf16 kernels (AMX/AVX512-BF16 CPUs only)"},
    "bf16_bn": {"kind": "kit", "mixed_precision": True, "normalization": "batch", "needs": "bf16",
                "about": "bf16, normalization='batch'"},
    "train_on_batch": {"kind": "kit", "loop": "train_on_batch",
                       "about": "a Python loop of model.train_on_batch instead of model.fit"},
    "threads_inter1": {"kind": "kit", "intra_op_threads": 2, "inter_op_threads": 1,
                       "about": "tf.config.threading: intra-op 2, inter-op 1"},
    "threads_intra1": {"kind": "kit", "intra_op_threads": 1, "inter_op_threads": 1,
                       "about": "tf.config.threading: intra-op 1, inter-op 1 (one core)"},
    "no_onednn": {"kind": "kit", "env": {"TF_ENABLE_ONEDNN_OPTS": "0"},
                  "about": "TF_ENABLE_ONEDNN_OPTS=0 (Eigen kernels instead of oneDNN)"},
    "cached_tensors": {"kind": "kit", "data": "cached",
                       "about": "pre-made float batches: what model.fit costs with no pipeline work"},
    "default_augment": {"kind": "kit", "augment": True,
                        "about": "default + make_augmenter(flip='horizontal', rotation=0.1) in the pipeline"},
    "default_bn": {"kind": "kit", "normalization": "batch", "about": "default, normalization='batch'"},
    "kit_before_bn": {"kind": "kit", "normalization": "batch", "tfdata": "autotune_on", "steps_per_execution": 1,
                      "about": "kit_before, normalization='batch'"},
    "torch": {"kind": "torch", "about": "PyTorch, DataLoader(shuffle=True, num_workers=0), NCHW"},
    "torch_channels_last": {"kind": "torch", "channels_last": True,
                            "about": "PyTorch, as above, channels_last memory format"},
    "torch_workers1": {"kind": "torch", "num_workers": 1,
                       "about": "PyTorch, DataLoader(num_workers=1, persistent_workers=True)"},
    "torch_bn": {"kind": "torch", "normalization": "batch", "about": "PyTorch, normalization='batch'"},
    "torch_channels_last_bn": {"kind": "torch", "channels_last": True, "normalization": "batch",
                               "about": "PyTorch, channels_last, normalization='batch'"},
    "torch_bf16": {"kind": "torch", "autocast": "bfloat16", "needs": "bf16",
                   "about": "PyTorch, torch.autocast('cpu', bfloat16): the counterpart of the kit's bf16"},
    "torch_channels_last_bf16": {"kind": "torch", "channels_last": True, "autocast": "bfloat16", "needs": "bf16",
                                 "about": "PyTorch, channels_last and bfloat16 autocast"},
}
QUICK_CONFIGS = ["default", "kit_before", "torch", "torch_channels_last"]


# -- the parent: start the workers, run the rounds, print the table ---------------------------------------------


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    if args.list:
        for name, config in CONFIGS.items():
            print(f"{name:24s} {config['about']}")
        return
    if args.profile:
        kit_configs = [name for name, config in CONFIGS.items() if config["kind"] == "kit"]
        if args.profile not in kit_configs:
            sys.exit(f"--profile takes one of the kit's configurations ({', '.join(kit_configs)}), "
                     f"received {args.profile!r}.")
        kit_worker({**CONFIGS[args.profile], "name": args.profile, "samples": args.samples or SAMPLES,
                    "batch_size": args.batch_size, "threads": args.threads, "profile": args.top})
        return
    names = args.configs.split(",") if args.configs else (QUICK_CONFIGS if args.quick else list(CONFIGS))
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        sys.exit(f"Unknown configuration(s) {unknown}; --list shows them.")
    if any(CONFIGS[n].get("needs") == "bf16" for n in names):
        from lab.system.hardware import cpu_supports_bfloat16

        if not cpu_supports_bfloat16():
            skipped = [n for n in names if CONFIGS[n].get("needs") == "bf16"]
            print(f"  SKIPPED {', '.join(skipped)}: this CPU has no bfloat16 instructions (amx_bf16/avx512_bf16), "
                  "so bfloat16 would be emulated", flush=True)
            names = [n for n in names if n not in skipped]
    if any(CONFIGS[n]["kind"] == "torch" for n in names) and not _has_torch():
        sys.exit("PyTorch is not installed: pip install -r benchmarks/requirements.txt (or leave out the torch "
                 "configurations with --configs).")
    samples = args.samples or (2_048 if args.quick else SAMPLES)
    rounds = args.rounds or 2
    block = args.block or (2 if args.quick else 4)
    if block < 2:
        sys.exit("--block must be at least 2: the first epoch of every block is not timed.")
    print(f"E1 CNN, {samples} images {IMAGE_SHAPE} uint8, {CLASSES} classes, batch {args.batch_size}, "
          f"{os.cpu_count()} CPU cores; {rounds} rounds of {block} epochs per configuration, the first of each "
          f"block untimed: {rounds * (block - 1)} timed epochs each", flush=True)

    workers: dict[str, Worker] = {}
    results: dict[str, list[dict]] = {}
    try:
        for name in names:
            spec = {**CONFIGS[name], "name": name, "samples": samples, "batch_size": args.batch_size,
                    "threads": args.threads}
            started = time.perf_counter()
            worker = Worker(spec)
            try:
                worker.ready = worker.read()
            except RuntimeError as error:  # one broken configuration must not lose the others
                print(f"  SKIPPED {name}: {error}", flush=True)
                worker.close()
                continue
            workers[name] = worker
            print(f"  ready: {name:24s} params {worker.ready['params']:,} (trainable {worker.ready['trainable']:,}), "
                  f"started in {time.perf_counter() - started:.0f} s", flush=True)
        names = [name for name in names if name in workers]
        results = {name: [] for name in names}
        retaken, waited = 0, 0.0
        for round_index in range(rounds):
            for name in names:
                # A block during which other processes kept more than --max-other-load cores busy is
                # taken again, at most --retries times.
                for attempt in range(args.retries + 1):
                    waited += wait_until_quiet(args.max_other_load, args.wait_quiet)
                    epochs, others = workers[name].block(block)
                    if others <= args.max_other_load or attempt == args.retries:
                        break
                    retaken += 1
                if round_index == 0:
                    print(f"  {name}: first epoch (tracing, compilation) {epochs[0]['seconds']:.1f} s", flush=True)
                results[name] += [{**epoch, "others": others} for epoch in epochs[1:]]
            print(f"  round {round_index + 1}/{rounds}: "
                  + ", ".join(f"{n} {statistics.median(e['seconds'] for e in results[n]):.2f}s" for n in names),
                  flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    print(f"  waited {waited:.0f} s in all for other processes to go quiet; blocks taken again because they "
          f"did not: {retaken}")
    report(names, workers, results, samples, args.batch_size)


def report(names: list[str], workers: dict, results: dict[str, list[dict]], samples: int, batch_size: int) -> None:
    steps = math.ceil(samples / batch_size)
    seconds = {name: [epoch["seconds"] for epoch in results[name]] for name in names}
    median = {name: statistics.median(seconds[name]) for name in names}
    mean = {name: statistics.mean(seconds[name]) for name in names}
    params = {name: workers[name].ready["params"] for name in names}
    print()
    print(f"{'configuration':22s} {'params':>8s} {'median s':>8s} {'mean s':>7s} {'min s':>6s} {'max s':>6s} "
          f"{'ms/step':>7s} {'vs default':>10s} {'outside':>7s} {'stalls':>6s} {'others':>6s}  what")
    for name in names:
        t = seconds[name]
        outside = [epoch["outside"] for epoch in results[name]]
        stalls = sum(value > STALL_SECONDS for value in outside)
        relative = f"{median[name] / median['default']:.2f}x" if "default" in median else "-"
        others = statistics.mean(epoch["others"] for epoch in results[name])
        print(f"{name:22s} {params[name]:>8,d} {median[name]:8.2f} {mean[name]:7.2f} {min(t):6.2f} {max(t):6.2f} "
              f"{1000 * median[name] / steps:7.1f} {relative:>10s} {statistics.mean(outside):7.2f} "
              f"{stalls:>3d}/{len(t):<2d} {others:6.2f}  {CONFIGS[name]['about']}")
    print(f"(outside: mean seconds of an epoch spent outside its batches (iterators made and torn down); stalls: "
          f"epochs where that took over {STALL_SECONDS} s;\n others: mean cores other processes kept busy during "
          f"the blocks, near 0 on a quiet machine)")

    print()
    def torch_kind(normalization: bool, bf16: bool) -> list[str]:
        return [n for n in names if CONFIGS[n]["kind"] == "torch" and bool(CONFIGS[n].get("normalization")) ==
                normalization and bool(CONFIGS[n].get("autocast")) == bf16]

    torch_plain, torch_bn, torch_bf16 = torch_kind(False, False), torch_kind(True, False), torch_kind(False, True)
    for kit, torch_names in (("default", torch_plain), ("kit_before", torch_plain), ("bf16", torch_plain + torch_bf16),
                             ("default_bn", torch_bn), ("kit_before_bn", torch_bn), ("bf16_bn", torch_bn)):
        for torch_name in torch_names if kit in names else []:
            same = "equal" if params[kit] == params[torch_name] else "DIFFER"
            print(f"ratio {kit} / {torch_name}: median {median[kit]:.2f} / {median[torch_name]:.2f} s = "
                  f"{median[kit] / median[torch_name]:.2f} (mean {mean[kit] / mean[torch_name]:.2f}); "
                  f"parameters {same}: {params[kit]:,} / {params[torch_name]:,}")
    # The target compares with PyTorch in float32, its default; bf16 rows are also compared with
    # PyTorch's own bfloat16 autocast, the like-for-like figure.
    for kit, torch_names, label in (("default", torch_plain, "float32"), ("kit_before", torch_plain, "float32"),
                                    ("bf16", torch_plain, "float32"), ("bf16", torch_bf16, "bfloat16")):
        if kit in median and torch_names:
            fastest = min(torch_names, key=median.get)
            ratio = median[kit] / median[fastest]
            verdict = "met" if ratio <= TARGET_RATIO else "NOT met"
            print(f"target: {kit} epoch <= {TARGET_RATIO} x PyTorch's fastest {label} ({fastest}), medians: "
                  f"{ratio:.2f} -> {verdict}")


class Worker:
    """One configuration in its own process, driven a line at a time over stdin/stdout."""

    def __init__(self, spec: dict):
        env = {**os.environ, **spec.get("env", {}), "TF_CPP_MIN_LOG_LEVEL": "2",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.name = spec["name"]
        self.ready: dict = {}

    def read(self) -> dict:
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                return json.loads(line[len(PROTOCOL):])
        raise RuntimeError(f"worker stopped (exit code {self.process.wait()}); its stderr is above")

    def block(self, epochs: int) -> tuple[list[dict], float]:
        """Trains ``epochs`` epochs back to back; returns their times and the cores others used meanwhile."""
        with LoadMeter([self.process.pid, os.getpid()]) as meter:
            self.process.stdin.write(f"{epochs}\n")
            self.process.stdin.flush()
            result = self.read()
        return result["epochs"], meter.others

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


# -- the workers -------------------------------------------------------------------------------------------------


def send(**values) -> None:
    print(PROTOCOL + json.dumps(values), flush=True)


def commands():
    """The parent's requests: the number of epochs of each block, until it says quit."""
    for line in sys.stdin:
        if not line.strip().isdigit():
            return
        yield int(line)


class Stamps:
    """Times the epochs of one block, back to back: each from the previous epoch's end to its own.

    ``start`` before the block, ``batch_begin``/``batch_end`` around each batch (or execution),
    ``epoch_end`` after each epoch. ``outside`` is the time of an epoch not spent between its first
    batch's start and its last batch's end.
    """

    def start(self) -> None:
        self.epochs: list[dict] = []
        self.boundary = time.perf_counter()
        self.first = self.last = None

    def batch_begin(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def batch_end(self) -> None:
        self.last = time.perf_counter()

    def epoch_end(self) -> None:
        now = time.perf_counter()
        self.epochs.append({"seconds": now - self.boundary,
                            "outside": (now - self.boundary) - (self.last - self.first)})
        self.boundary, self.first, self.last = now, None, None


def run_worker(spec: dict) -> None:
    (kit_worker if spec["kind"] == "kit" else torch_worker)(spec)


def kit_worker(spec: dict) -> None:
    import tensorflow as tf

    # Thread pools are fixed when the TensorFlow runtime starts: set them before any op runs.
    if "intra_op_threads" in spec:
        tf.config.threading.set_intra_op_parallelism_threads(spec["intra_op_threads"])
        tf.config.threading.set_inter_op_parallelism_threads(spec["inter_op_threads"])
    import keras

    from lab.system import hardware
    from lab.runs.callbacks import DivergenceMonitor, EpochTimer
    from lab.config import RunConfig
    from lab.models import build_model
    from lab.data.pipeline import make_augmenter, make_pipeline
    from lab.tasks.classification import compile_model
    from lab.runs.runner import seed_everything

    overrides = {key: spec[key] for key in ("jit_compile", "deterministic", "normalization", "steps_per_execution",
                                            "mixed_precision") if key in spec}
    config = RunConfig(model="cnn", batch_size=spec["batch_size"], **overrides)
    seed_everything(config.seed, config.deterministic)
    images, labels = make_data(spec["samples"], config.seed)

    with hardware.precision(config.mixed_precision), hardware.get_strategy(config.distribute).scope():
        model = build_model(config.model, IMAGE_SHAPE, CLASSES, **config.model_options())
        compile_model(model, config)
    augmenter = None
    if spec.get("augment"):
        augmenter = make_augmenter(flip=config.aug_flip, rotation=config.aug_rotation, zoom=config.aug_zoom,
                                   translation=config.aug_translation, contrast=config.aug_contrast,
                                   seed=config.seed)
    train_ds = make_pipeline(images, labels, training=True, batch_size=config.batch_size, augmenter=augmenter,
                             pipeline_size=config.pipeline_size, input_scaling=config.input_scaling, cache=config.cache,
                             seed=config.seed, deterministic=config.deterministic)
    if spec.get("tfdata"):
        data_options = tf.data.Options()
        if spec["tfdata"] in ("no_autotune", "autotune_on"):  # overrides what make_pipeline set
            data_options.autotune.enabled = spec["tfdata"] == "autotune_on"
        elif spec["tfdata"] == "private_pool":
            data_options.threading.private_threadpool_size = 1
        train_ds = train_ds.with_options(data_options)
    steps_per_epoch = None
    if spec.get("data") == "cached":
        train_ds = train_ds.cache()  # the warm-up epoch fills it; later epochs replay its float batches
    elif spec.get("data") == "repeat":
        train_ds = train_ds.repeat()  # each pass ends on its own smaller batch, so epochs stay aligned
        steps_per_epoch = math.ceil(len(images) / config.batch_size)
    if spec.get("profile"):
        profile_epoch(model, train_ds, steps_per_epoch, top=spec["profile"])
        return

    send(params=int(model.count_params()), trainable=int(sum(math.prod(w.shape) for w in model.trainable_weights)))
    stamps = Stamps()
    if spec.get("loop") == "train_on_batch":
        for epochs in commands():
            stamps.start()
            for _ in range(epochs):
                model.reset_metrics()
                for x, y in train_ds:  # the iterator is torn down as the loop ends
                    stamps.batch_begin()
                    model.train_on_batch(x, y)
                    stamps.batch_end()
                stamps.epoch_end()
            send(epochs=stamps.epochs)
        return

    class Stamper(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            stamps.batch_begin()

        def on_train_batch_end(self, batch, logs=None):
            stamps.batch_end()

        def on_epoch_end(self, epoch, logs=None):
            stamps.epoch_end()

    # lab.runs.training's callbacks that act during training (the others need validation data). The
    # divergence check stays at NaN/inf: random labels would trip its chance-level test.
    callbacks = [Stamper(), EpochTimer(), DivergenceMonitor(baseline_loss=None)]
    for epochs in commands():
        stamps.start()
        model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0, shuffle=False,
                  callbacks=callbacks)
        send(epochs=stamps.epochs)


def profile_epoch(model, train_ds, steps_per_epoch: int | None, *, top: int) -> None:
    """Trains one epoch (after an untimed one) under TensorFlow's profiler and prints where the time went.

    Sums the profiler's host events by name: the train step's TensorFlow ops (named by their layer
    and op type), tf.data's stages, and the executor's own events (which contain the ops: the totals
    overlap). Both compute threads are summed, so op totals can exceed the wall time.
    """
    import collections
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    model.fit(train_ds, epochs=1, steps_per_epoch=steps_per_epoch, verbose=0)
    with tempfile.TemporaryDirectory() as logdir:
        started = time.perf_counter()
        tf.profiler.experimental.start(logdir)
        model.fit(train_ds, epochs=1, steps_per_epoch=steps_per_epoch, verbose=0)
        tf.profiler.experimental.stop()
        seconds = time.perf_counter() - started
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(Path(logdir).rglob("*.xplane.pb")).read_bytes())
    totals, counts = collections.Counter(), collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                # Ops of the traced train step are named by their call path; its last part names the
                # layer and the op type (e.g. ".../block2_conv1_1/convolution/Conv2DBackpropFilter").
                name = plane.event_metadata[event.metadata_id].name.split("StatefulPartitionedCall/")[-1]
                totals[name] += event.duration_ps / 1e9
                counts[name] += 1
    print(f"profiled epoch: {seconds:.2f} s wall (profiler on); top {top} host events by total time:")
    for name, milliseconds in totals.most_common(top):
        print(f"  {milliseconds:9.1f} ms  x{counts[name]:<6d} {name[-110:]}")


def torch_worker(spec: dict) -> None:
    import torch
    from torch import nn

    torch.set_num_threads(spec["threads"] or os.cpu_count())
    torch.manual_seed(0)
    images, labels = make_data(spec["samples"])
    model = torch_cnn(spec.get("normalization"))
    memory_format = torch.channels_last if spec.get("channels_last") else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # Keras' Adam: same betas; eps 1e-7 vs 1e-8
    loss_fn = nn.CrossEntropyLoss()
    # bfloat16 autocast runs the convolutions and matmuls in bf16 (oneDNN), keeping float32 weights, as
    # Keras' mixed_bfloat16 does; without it everything is float32.
    autocast = spec.get("autocast")
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels))
    workers = spec.get("num_workers", 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch_size"], shuffle=True, num_workers=workers,
                                         persistent_workers=workers > 0)
    # Parameters plus BatchNorm's running statistics, which Keras counts as non-trainable weights.
    params = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    send(params=params, trainable=sum(p.numel() for p in model.parameters()))
    stamps = Stamps()
    for epochs in commands():
        stamps.start()
        for _ in range(epochs):
            model.train()
            for x, y in loader:
                stamps.batch_begin()
                # NHWC uint8 -> NCHW float in [0, 1], the kit's "unit" scaling, one op per batch.
                x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=memory_format)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast == "bfloat16"):
                    loss = loss_fn(model(x), y)
                loss.backward()
                optimizer.step()
                stamps.batch_end()
            stamps.epoch_end()
        send(epochs=stamps.epochs)


def torch_cnn(normalization: str | None):
    """lab.models.cnn's defaults in PyTorch: 3 blocks of 3x3 'same' conv (32/64/128) -> [BN] -> ReLU -> 2x2
    max-pool, Flatten, Dense(128) -> [BN] -> ReLU, Dense(8). The softmax is inside CrossEntropyLoss."""
    from torch import nn

    batch_norm = normalization == "batch"
    layers, channels = [], IMAGE_SHAPE[2]
    for width in (32, 64, 128):
        layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
        if batch_norm:  # Keras' BatchNormalization defaults: epsilon 1e-3, momentum 0.99
            layers.append(nn.BatchNorm2d(width, eps=1e-3, momentum=0.01))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    side = IMAGE_SHAPE[0] // 8  # 28 -> 14 -> 7 -> 3, flooring like Keras' 'valid' pooling
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 128, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(128, eps=1e-3, momentum=0.01))
    layers += [nn.ReLU(), nn.Linear(128, CLASSES)]
    return nn.Sequential(*layers)


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="blocks per configuration (default 2)")
    parser.add_argument("--block", type=int, help="epochs per block, the first untimed (default 4; 2 with --quick)")
    parser.add_argument("--samples", type=int, help=f"training images (default {SAMPLES}; 2048 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="PyTorch threads (default: all cores)")
    parser.add_argument("--configs", help="comma-separated configurations (default: all; --list shows them)")
    parser.add_argument("--max-other-load", type=float, default=0.3, help=QUIET_HELP)
    parser.add_argument("--retries", type=int, default=2, help="retakes per block at most (default 2)")
    parser.add_argument("--wait-quiet", type=float, default=30.0,
                        help="before each block, wait up to this many seconds for quiet (default 30)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {', '.join(QUICK_CONFIGS)}; 2048 images, blocks of 2 epochs")
    parser.add_argument("--list", action="store_true", help="list the configurations and exit")
    parser.add_argument("--profile", metavar="CONFIG",
                        help="profile one epoch of this kit configuration (TensorFlow's profiler); print its top ops")
    parser.add_argument("--top", type=int, default=30, help="host events --profile prints (default 30)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
