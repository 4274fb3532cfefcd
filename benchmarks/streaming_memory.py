"""Shows that a streamed run's memory does not grow with its data, and what streaming costs in speed.

Generates a MedMNIST-format npz (random uint8 images, PathMNIST's split shares and 9 classes)
at 1x and 8x size in a temporary directory, written a chunk at a time (the generator never
holds the data either). Then, in a fresh Python process per measurement:

1. Memory: ``lab.runs.training.train`` with ``dataset="npz:<file>"``, ``data_path="stream"`` on each
   size: the conversion to TFRecords (the npz read a chunk at a time), one training epoch from
   the shards and the run's whole evaluation (loss and accuracy of every split, predictions,
   confusion matrix, sample grid). Peak memory is the child's peak resident set size
   (``getrusage(RUSAGE_SELF).ru_maxrss``); "start" is its resident size once TensorFlow and
   the kit are imported. The peak of each phase (convert: ``load_streamed``; train: inside
   ``Model.fit``; evaluate: from the end of training to the end of the run, i.e. evaluation,
   predictions and plots) is sampled every 50 ms by a thread, so it can miss a spike shorter
   than that; the overall peak cannot. Target: peak(8x) / peak(1x) <= 1.15. An in-memory run would hold 8x
   the images (the 8x default is 28,000 224x224x3 images, 4.2 GB).
2. Throughput, on the 1x data: two epochs with ``data_path="memory"`` and two with
   ``data_path="stream"`` (the shards already written), each in a fresh process; the second
   epoch's images per second are compared (the first includes tracing, and the in-memory
   pipeline filling its cache). Target: streamed / in-memory >= 0.9.

The model is the kit's small CNN (depth 2, 8 filters), so the input pipeline's share of an
epoch is as large as it gets on a CPU; a real model hides the pipeline's cost more.

    python benchmarks/streaming_memory.py                # 224 px: 3,500 and 28,000 images (0.5 and 4.2 GB)
    python benchmarks/streaming_memory.py --quick        # 32 px: 2,000 and 16,000 images, a smoke run
    python benchmarks/streaming_memory.py --compressed   # deflated npz members, as MedMNIST ships them

Disk: the npz and its TFRecords (about twice the images) for one size at a time, under
``--workdir`` (default: the system's temporary directory), removed at the end. The machine
should be quiet: the throughput comparison is only as good as the two epochs' conditions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

# Run from a checkout without installing: make ``import lab`` find the package next to this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MEMORY_TARGET = 1.15
THROUGHPUT_TARGET = 0.9
MULTIPLIER = 8
# PathMNIST's split shares (89,996 / 10,004 / 7,180) and classes.
SHARES = {"train": 0.8397, "val": 0.0933, "test": 0.0670}
CLASSES = 9
GENERATE_CHUNK_BYTES = 64 * 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3_500, help="images of the 1x npz, all splits (default 3,500)")
    parser.add_argument("--side", type=int, default=224, help="image height and width (default 224)")
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compressed", action="store_true", help="deflate the npz members (slower to write and read)")
    parser.add_argument("--quick", action="store_true", help="32 px, 2,000 images: a smoke run of the whole script")
    parser.add_argument("--skip-throughput", action="store_true", help="measure memory only")
    parser.add_argument("--workdir", help="where the npz files and TFRecords go (default: a temporary directory)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # a JSON job for the measuring process
    args = parser.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    if args.quick:
        args.images, args.side = 2_000, 32
    if args.images < 100:
        parser.error(f"--images must be at least 100 (every split needs each class), received {args.images}.")
    shape = (args.side, args.side, args.channels)
    root = Path(tempfile.mkdtemp(prefix="lab-streaming-memory-", dir=args.workdir))
    try:
        rows, throughput = [], {}
        for multiple in (1, MULTIPLIER):
            count = args.images * multiple
            npz = root / f"data-{multiple}x.npz"
            started = time.perf_counter()
            nbytes = write_npz(npz, count, shape, compressed=args.compressed)
            generate_s = time.perf_counter() - started
            records = root / f"records-{multiple}x"
            job = {"npz": str(npz), "records": str(records), "reports": str(root / "reports"), "data_path": "stream",
                   "epochs": 1, "batch_size": args.batch_size}
            row = {"multiple": multiple, "images": count, "image_gb": nbytes / 1e9, "npz_gb": npz.stat().st_size / 1e9,
                   "generate_s": generate_s, **_run_child(job)}
            row["tfrecord_gb"] = sum(p.stat().st_size for p in records.iterdir()) / 1e9
            rows.append(row)
            if multiple == 1 and not args.skip_throughput:
                for path in ("memory", "stream"):  # the shards exist now: only the epochs are compared
                    throughput[path] = _run_child({**job, "data_path": path, "epochs": 2})
            shutil.rmtree(records)
            npz.unlink()  # keep the disk footprint to one size at a time
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return _report(rows, throughput, shape, args)


def write_npz(path: Path, count: int, shape: tuple[int, int, int], *, compressed: bool, seed: int = 0) -> int:
    """Writes a MedMNIST-format npz of ``count`` random images, member by member, a chunk at a time.

    Returns:
        The bytes of its images.
    """
    import numpy as np
    import numpy.lib.format as npy_format

    rng = np.random.default_rng(seed)
    counts = {"train": round(count * SHARES["train"]), "val": round(count * SHARES["val"])}
    counts["test"] = count - counts["train"] - counts["val"]
    per_chunk = max(1, GENERATE_CHUNK_BYTES // int(np.prod(shape)))
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression=method, allowZip64=True) as archive:
        for split, n in counts.items():
            with archive.open(f"{split}_images.npy", "w", force_zip64=True) as member:
                npy_format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False,
                                                           "shape": (n, *shape)})
                for start in range(0, n, per_chunk):
                    member.write(rng.integers(0, 256, size=(min(per_chunk, n - start), *shape), dtype=np.uint8).data)
            # Every class in every split, in a shuffled order; (N, 1) like MedMNIST's labels.
            labels = rng.permutation(np.arange(n) % CLASSES).astype(np.uint8).reshape(n, 1)
            with archive.open(f"{split}_labels.npy", "w") as member:
                npy_format.write_array(member, labels)
    return count * int(np.prod(shape))


def _run_child(job: dict) -> dict:
    """Runs one measurement in a new interpreter and returns its JSON report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), LAB_PROGRESS="0",
               LAB_REPORTS_DIR=job["reports"])
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"The measurement {job} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(job: dict) -> int:
    """Child process: one run (conversion if needed, epochs, evaluation); prints one JSON line."""
    from lab.config import RunConfig
    from lab.data.datasets.streaming import load_streamed
    from lab.runs.training import train

    start_mb = _current_rss_mb()
    phases = _PhaseSampler()
    config = RunConfig(dataset=f"npz:{job['npz']}", data_path=job["data_path"], model="cnn", depth=2, filters=8,
                       dense_units=32, epochs=job["epochs"], batch_size=job["batch_size"], save_model=False,
                       early_stopping_patience=None, verbose=0,
                       **({"tfrecord_dir": job["records"]} if job["data_path"] == "stream" else {}))
    data, convert_s = None, 0.0
    if job["data_path"] == "stream":
        started = time.perf_counter()
        phases.enter("convert")
        data = load_streamed(config, reason="benchmark", verbose=False)
        convert_s = time.perf_counter() - started
    phases.enter("setup")
    started = time.perf_counter()
    with phases.marking_fit():
        result = train(config, data=data)
    run_s = time.perf_counter() - started
    phases.stop()
    epochs = result.history["epoch_seconds"].tolist()
    train_images = int(result.metrics.get("train_images") or _train_images(result))
    print(json.dumps({"status": result.status, "start_mb": start_mb, "peak_mb": _peak_rss_mb(),
                      "phase_peak_mb": phases.peaks, "convert_s": convert_s, "run_s": run_s, "epoch_s": epochs,
                      "train_images": train_images,
                      "test_accuracy": result.metrics.get("test_accuracy")}))
    return 0


class _PhaseSampler:
    """Samples the resident set size every 50 ms and keeps the peak of each phase of the run."""

    def __init__(self, interval_s: float = 0.05) -> None:
        self.peaks: dict[str, float] = {}
        self._phase = "start"
        try:
            import psutil
        except ImportError:  # no current size without it: the phases stay unmeasured ("-")
            self._process = None
        else:
            self._process = psutil.Process()
        self._interval_s = interval_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def enter(self, phase: str) -> None:
        self._record()  # the size on leaving the previous phase counts for it
        self._phase = phase

    def stop(self) -> None:
        self._record()
        self._stopped.set()
        self._thread.join()

    def marking_fit(self):
        """Marks the time inside ``keras.Model.fit`` as "train" and everything after the last fit
        as "evaluate" (evaluation, predictions, plots), without touching the kit."""
        import contextlib

        import keras

        sampler, original = self, keras.Model.fit

        def fit(model, *args, **kwargs):
            sampler.enter("train")
            try:
                return original(model, *args, **kwargs)
            finally:
                sampler.enter("evaluate")

        @contextlib.contextmanager
        def patched():
            keras.Model.fit = fit
            try:
                yield
            finally:
                keras.Model.fit = original
        return patched()

    def _record(self) -> None:
        if self._process is None:
            return
        size = self._process.memory_info().rss / 2**20
        self.peaks[self._phase] = max(self.peaks.get(self._phase, 0.0), size)

    def _sample(self) -> None:
        while not self._stopped.wait(self._interval_s):
            self._record()


def _train_images(result) -> int:
    record = json.loads((Path(result.run_dir) / "config.json").read_text())
    return record["data"]["sizes"]["train"]


def _report(rows: list[dict], throughput: dict, shape: tuple[int, int, int], args) -> int:
    kind = "deflated" if args.compressed else "stored"
    print(f"\nStreamed run (npz -> TFRecords, 1 epoch, full evaluation) on {shape[0]}x{shape[1]}x{shape[2]} uint8 "
          f"images, {kind} npz, batch {args.batch_size}, one fresh process per size:\n")
    header = (f"{'size':>5} {'images':>8} {'images GB':>10} {'npz GB':>7} {'shards GB':>10} {'convert s':>10} "
              f"{'run s':>7} {'start MB':>9} {'peak MB':>8}  peak MB of convert / train / evaluate")
    print(header)
    print("-" * len(header))
    for row in rows:
        print(f"{row['multiple']:>4}x {row['images']:>8,} {row['image_gb']:>10.2f} {row['npz_gb']:>7.2f} "
              f"{row['tfrecord_gb']:>10.2f} {row['convert_s']:>10.1f} {row['run_s']:>7.1f} {row['start_mb']:>9.0f} "
              f"{row['peak_mb']:>8.0f}  {_phase_peaks(row)}")
    small, large = rows
    ratio = large["peak_mb"] / small["peak_mb"]
    memory_ok = ratio <= MEMORY_TARGET
    print(f"\npeak(8x) / peak(1x) = {ratio:.3f} ({'meets' if memory_ok else 'MISSES'} the target <= "
          f"{MEMORY_TARGET:.2f}); the images are {large['image_gb'] / small['image_gb']:.1f}x larger "
          f"({large['image_gb']:.2f} GB at 8x).")
    throughput_ok = True
    if throughput:
        rates = {path: throughput[path]["train_images"] / throughput[path]["epoch_s"][-1] for path in throughput}
        speed = rates["stream"] / rates["memory"]
        throughput_ok = speed >= THROUGHPUT_TARGET
        print("\nTraining throughput on the 1x data, second epoch (validation included), one fresh process each:")
        for path in ("memory", "stream"):
            seconds = throughput[path]["epoch_s"]
            print(f"  {path:>6}: {rates[path]:8.1f} images/s (epochs {', '.join(f'{s:.1f}' for s in seconds)} s, "
                  f"peak {throughput[path]['peak_mb']:.0f} MB)")
        print(f"  streamed / in-memory = {speed:.2f} ({'meets' if throughput_ok else 'MISSES'} the target >= "
              f"{THROUGHPUT_TARGET:.1f})")
    return 0 if memory_ok and throughput_ok else 1


def _phase_peaks(row: dict) -> str:
    peaks = row.get("phase_peak_mb") or {}
    return " / ".join(f"{peaks[phase]:.0f}" if phase in peaks else "-" for phase in ("convert", "train", "evaluate"))


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _current_rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return _peak_rss_mb()  # the peak so far is the current size, give or take import churn
    return psutil.Process().memory_info().rss / 2**20


if __name__ == "__main__":
    sys.exit(main())
