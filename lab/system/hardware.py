"""GPU/TPU options: distribution strategies and mixed precision, all off by default.

On a CPU the defaults (no strategy, float32, no XLA) are the bit-reproducible choice, and the
fastest unless the CPU computes in bfloat16 itself (``cpu_supports_bfloat16``: Intel AMX or
AVX512-BF16), where ``mixed_precision=True`` runs oneDNN's bfloat16 kernels and trains the E1
CNN in about half the float32 time (0.45-0.66x measured on a busy 2-core Sapphire Rapids machine:
benchmarks/training_speed.py, "bf16"). In Colab a notebook switches these options on with flat
parameters; ``mixed_precision="auto"`` (the notebooks' default) switches mixed precision on only
for GPUs with tensor cores (``AUTO_MIXED_CAPABILITY``), so a CPU's results never move.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Iterator

import keras
import tensorflow as tf

from lab.config.base import check_mixed_precision


def gpus() -> list:
    """The GPUs TensorFlow sees."""
    return tf.config.list_physical_devices("GPU")


# GPUs from Volta (compute capability 7.0: V100, Colab's T4 is 7.5) on have tensor cores, where
# float16 trains about twice as fast; older ones (a P100 is 6.0) compute float16 no faster.
AUTO_MIXED_CAPABILITY = (7, 0)


def gpu_capabilities() -> list[tuple[int, int]]:
    """The CUDA compute capability of each GPU TensorFlow sees (``(0, 0)`` where it is not reported)."""
    return [tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
            for gpu in gpus()]


def use_mixed_precision(setting: bool | str) -> bool:
    """Whether a run's ``mixed_precision`` setting means mixed precision on this machine.

    Args:
        setting: True, False, or ``"auto"``: on when every GPU has a compute capability of at
            least ``AUTO_MIXED_CAPABILITY`` (tensor cores), off on a CPU (results stay float32)
            and on older GPUs.

    Raises:
        ValueError: any other value.
    """
    check_mixed_precision(setting)
    if setting == "auto":
        capabilities = gpu_capabilities()
        return bool(capabilities) and min(capabilities) >= AUTO_MIXED_CAPABILITY
    return setting


def device_summary() -> str:
    """``"cpu"`` or e.g. ``"1x GPU"``, recorded with every run."""
    found = gpus()
    return f"{len(found)}x GPU" if found else "cpu"


def get_strategy(name: str | None) -> tf.distribute.Strategy:
    """Returns the tf.distribute strategy for a flat parameter value.

    Args:
        name: None (default strategy: one device), ``"mirrored"`` (all local GPUs),
            ``"multiworker"`` (MultiWorkerMirroredStrategy; workers from ``TF_CONFIG``), or
            ``"tpu"`` (a Colab/Cloud TPU found by the cluster resolver).

    With several replicas (two GPUs, two workers) compile with ``steps_per_execution=1``:
    Keras 3.15's multi-step loop fails under MirroredStrategy and MultiWorkerMirroredStrategy
    with "You must feed a value for placeholder tensor" (keras-team/keras#19246).
    """
    if name is None:
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        task_info()  # a malformed TF_CONFIG is reported here, not deep inside TensorFlow
        return KerasMultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribute must be None, 'mirrored', 'multiworker' or 'tpu', received {name!r}.")


class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` accepts the two calls Keras 3 makes of it.

    Keras 3.15's TensorFlow trainer, with two or more workers, (1) reduces the first batch,
    an ``(x, y)`` tuple, to read its shapes before training, and (2) reduces scalar metric
    values with ``axis=0``. MultiWorkerMirroredStrategy refuses both ("Attempt to convert a
    value (PerReplica...)", "Invalid reduction dimension 0 for input with 0 dimensions":
    tensorflow/tensorflow#72388), so ``model.fit`` fails on the first step. Here a nested value
    is reduced leaf by leaf and a scalar across replicas only (axis=None), which is what the
    calls mean; everything else is the stock strategy.
    """

    def reduce(self, reduce_op, value, axis):
        if isinstance(value, (tuple, list, dict)):
            return tf.nest.map_structure(lambda v: None if v is None else self.reduce(reduce_op, v, axis), value)
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def task_info() -> tuple[str, int] | None:
    """This process's ``(task type, index)`` in ``TF_CONFIG``, or None without a cluster.

    Raises:
        ValueError: ``TF_CONFIG`` is set but is not the JSON TensorFlow expects.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        task = config.get("task") or {}
        return str(task["type"]), int(task.get("index", 0))
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"TF_CONFIG must be JSON like {{\"cluster\": {{\"worker\": [\"host1:port\", \"host2:port\"]}}, "
                         f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}; received TF_CONFIG={raw!r}.") from error


def is_chief() -> bool:
    """Whether this process is the one that writes results (run records, checkpoints).

    True without ``TF_CONFIG`` (one process), for the ``chief`` task, and for worker 0 of a
    cluster that has no chief (MultiWorkerMirroredStrategy's convention). Every worker trains
    the same model; only the chief should record it.
    """
    task = task_info()
    if task is None:
        return True
    kind, index = task
    if kind == "chief":
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster") or {}
    return kind == "worker" and index == 0 and "chief" not in cluster


# The instruction sets that decide which float kernels oneDNN and Eigen run on a CPU: two
# machines that differ in these may round differently, so a record names them (x86 and Arm).
KERNEL_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                   "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
                   "asimd", "sve", "sve2", "bf16", "i8mm")


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and feature flags, read from ``cpuinfo`` (Linux: x86's ``flags``,
    Arm's ``Features``); elsewhere the platform's processor name and no flags."""
    import platform

    model, flags = None, None
    try:
        with open(cpuinfo) as info:
            for line in info:  # every core repeats these lines: the first of each is kept
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key in ("model name", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "features") and flags is None:
                    flags = set(value.split())
                if model is not None and flags is not None:
                    break
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), flags or set()


def cpu_summary(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """The CPU facts a run record names beside the versions: its model, the instruction sets
    its float kernels depend on (``KERNEL_FEATURES`` it has, e.g. "avx2 avx512f amx_bf16") and
    the cores TensorFlow's thread pools use. Results can differ in their last digits between
    machines that differ here (the same seed repeats exactly only on the same machine)."""
    model, flags = cpu_flags(cpuinfo)
    return {"cpu": model, "cpu_features": " ".join(f for f in KERNEL_FEATURES if f in flags) or "unknown",
            "cpu_cores": str(os.cpu_count())}


def cpu_supports_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 instructions (AMX-BF16 or AVX512-BF16), read from ``cpuinfo``.

    Without them mixed_bfloat16 is emulated and slower than float32. False where the file is
    missing (not Linux).
    """
    flags = cpu_flags(cpuinfo)[1]
    return "amx_bf16" in flags or "avx512_bf16" in flags


def policy_name(mixed: bool | str) -> str:
    """The dtype policy of a run: float16 on a GPU (tensor cores) and bfloat16 elsewhere (TPU,
    recent CPUs) when mixed (``use_mixed_precision``: "auto" decides by the GPU), else float32."""
    return ("mixed_float16" if gpus() else "mixed_bfloat16") if use_mixed_precision(mixed) else "float32"


@contextlib.contextmanager
def precision(mixed: bool | str) -> Iterator[str]:
    """Sets Keras' global dtype policy for one run and restores the previous one afterwards.

    Mixed precision uses float16 on a GPU (tensor cores) and bfloat16 elsewhere (TPU, recent
    CPUs); the kit's output layers are float32 so the softmax and loss stay accurate.
    """
    previous = keras.config.dtype_policy()
    policy = policy_name(mixed)
    keras.config.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.config.set_dtype_policy(previous)
