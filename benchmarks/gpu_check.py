"""Does the kit use the GPU? E1 and E2 in their quick settings, on the GPU and on the CPU.

Trains the E1 CNN and the E2 transfer model (ResNet-18, head and last stage) as the notebooks' quick
settings do (scikit-learn's digits, embedded: no download), with ``mixed_precision="auto"``, and
checks that the work ran on the GPU, not only that TensorFlow lists one:

* the trained model's weights live on a GPU device (``variable.value.device``);
* the GPU's memory peaked during training (``tf.config.experimental.get_memory_info``);
* the run record names the dtype policy ``"auto"`` chose (``mixed_float16`` on a GPU with tensor
  cores, compute capability 7.0 or more: ``lab.system.hardware.use_mixed_precision``).

Then it trains the same two in a child process that sees no GPU (``CUDA_VISIBLE_DEVICES=-1``) and
prints the epoch times side by side: the median of the epochs after the first (which traces and
compiles). E2 trains from random weights here (``weights=None``): the quick setting's offline
pretraining would add minutes on a CPU and does not change an epoch's time. On a machine without
a GPU it says so and prints the CPU's times only. Run records go to a temporary folder.

Run: ``python benchmarks/gpu_check.py`` (about a minute with a GPU; ``--epochs`` to change the 3
epochs). Exit code 1 when a GPU was found but the work did not run on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configs(epochs: int) -> dict:
    """E1's and E2's quick settings (notebooks 01 and 02), with mixed_precision="auto"."""
    from lab.config import RunConfig

    common = dict(dataset="digits", epochs=epochs, early_stopping_patience=None, mixed_precision="auto", seed=0,
                  verbose=0, tensorboard=False, save_model=False, tags=["gpu-check"])
    return {
        "E1 cnn": RunConfig(model="cnn", pipeline_size=28, normalization="batch", dropout_rate=0.5, augment=True,
                            aug_flip=None, aug_rotation=0.1, learning_rate=1e-4, batch_size=64, name="gpu-check-e1",
                            **common),
        "E2 resnet18": RunConfig(model="transfer", backbone="resnet18", weights=None, backbone_input_size=32,
                                 limit=300, unfreeze=1, learning_rate=1e-2, batch_size=32, name="gpu-check-e2",
                                 **common),
    }


def measure(epochs: int) -> list[dict]:
    """Trains each configuration on this process's devices; one row per run."""
    import tensorflow as tf

    from lab.system import hardware
    from lab.data.datasets import load_dataset
    from lab.runs.records import load_run
    from lab.runs.training import train

    on_gpu = bool(hardware.gpus())
    rows = []
    for name, config in configs(epochs).items():
        data = load_dataset(config.dataset, limit=config.limit, seed=config.seed)
        if on_gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        result = train(config, data=data)
        seconds = list(result.history["epoch_seconds"])
        weights_device = result.model.trainable_weights[0].value.device if result.model is not None else "unknown"
        rows.append({
            "model": name, "status": result.status,
            "dtype_policy": load_run(result.run_dir).config["environment"]["dtype_policy"],
            "weights_on": weights_device.rsplit("/", 1)[-1] if weights_device else "unknown",
            "gpu_peak_mb": round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1) if on_gpu else None,
            "first_epoch_s": round(seconds[0], 2),
            "epoch_s": round(statistics.median(seconds[1:] or seconds), 3),
        })
    return rows


def on_cpu(epochs: int) -> list[dict]:
    """The same runs in a child process that sees no GPU."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, __file__, "--child", "--epochs", str(epochs)], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the CPU run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def problems(rows: list[dict]) -> list[str]:
    """What shows that a GPU run did not use the GPU (or its tensor cores)."""
    from lab.system import hardware

    wanted = hardware.policy_name("auto")
    found = []
    for row in rows:
        if row["status"] != "completed":
            found.append(f"{row['model']}: the run {row['status']}")
        if "GPU" not in row["weights_on"]:
            found.append(f"{row['model']}: its weights are on {row['weights_on']}, not on a GPU")
        if not row["gpu_peak_mb"]:
            found.append(f"{row['model']}: the GPU's memory did not move while it trained")
        if row["dtype_policy"] != wanted:
            found.append(f"{row['model']}: trained in {row['dtype_policy']}, where 'auto' means {wanted}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the CPU run, JSON on stdout
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be at least 2 (the first epoch compiles and is not timed), received {args.epochs}")
    with tempfile.TemporaryDirectory() as reports:
        os.environ["LAB_REPORTS_DIR"] = reports
        if args.child:
            print(json.dumps(measure(args.epochs)))
            return 0
        import pandas as pd

        from lab.system.colab import device_report
        from lab.system.hardware import gpus

        print(device_report())
        if not gpus():
            print("No GPU found: only the CPU's epoch times follow (nothing checked on a GPU).")
            print(pd.DataFrame(measure(args.epochs)).drop(columns="gpu_peak_mb").to_string(index=False))
            return 0
        gpu_rows = measure(args.epochs)
        cpu_rows = on_cpu(args.epochs)
        table = pd.DataFrame([{"model": g["model"], "dtype_policy": g["dtype_policy"], "weights_on": g["weights_on"],
                               "gpu_peak_mb": g["gpu_peak_mb"], "gpu_epoch_s": g["epoch_s"],
                               "cpu_epoch_s": c["epoch_s"], "speed-up": round(c["epoch_s"] / g["epoch_s"], 1)}
                              for g, c in zip(gpu_rows, cpu_rows)])
        print(table.to_string(index=False))
        found = problems(gpu_rows)
        for problem in found:
            print(f"NOT ON THE GPU: {problem}")
        print("the work ran on the GPU" if not found else "")
        return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
