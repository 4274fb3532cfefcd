"""One training run on several machines with MultiWorkerMirroredStrategy.

    python -m lab.studies.distributed run.json          # on every machine, with its TF_CONFIG

``run.json`` holds flat RunConfig values with ``"distribute": "multiworker"``. Every worker
builds the same model, reads the same data (each takes its share of every global batch:
``batch_size`` is the global batch) and applies the same all-reduced gradients, so every
worker ends with the same weights. Only the chief (``lab.system.hardware.is_chief``) keeps its run
record; the others write theirs into a temporary folder that is deleted afterwards (``lab.runs.runner``),
so a run on N machines leaves one record, not N.

``TF_CONFIG`` on machine i of N (the same cluster list everywhere, its own index):

    {"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": i}}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.system import hardware
from lab.config import RunConfig
from lab.data.datasets import Dataset
from lab.runs.training import RunResult, train


def train_worker(config: RunConfig | dict[str, Any], *, data: Dataset | None = None) -> RunResult | None:
    """Runs this process's part of a multi-worker run; returns the result on the chief, None elsewhere.

    The runner's policies apply as in any run: only the chief keeps a record (the others'
    temporary folders are deleted), and with several replicas every step is its own call
    (keras-team/keras#19246), whatever ``steps_per_execution`` says.

    Args:
        config: the run, with ``distribute="multiworker"``.
        data: an already loaded dataset (the same on every worker).

    Raises:
        ValueError: ``distribute`` is not "multiworker".
    """
    config = RunConfig.from_any(config)
    if config.distribute != "multiworker":
        raise ValueError(f"train_worker runs distribute='multiworker' runs, received distribute={config.distribute!r}.")
    result = train(config, data=data)
    return result if result.run_dir is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a JSON file of flat RunConfig values")
    args = parser.parse_args(argv)
    try:
        values = json.loads(args.config.read_text(encoding="utf-8"))
        result = train_worker(values)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    task = hardware.task_info()
    where = f"{task[0]} {task[1]}" if task else "single process"
    if result is None:
        print(f"{where}: done (the chief keeps the run record)", flush=True)
    else:
        print(f"{where}: {result.status}, val_loss {result.metrics.get('val_loss')}, record {result.run_dir}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
