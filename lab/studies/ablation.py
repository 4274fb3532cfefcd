"""E1's regularisation ablation as one command: ``python -m lab.studies.ablation``.

The configurations of the BloodMNIST report (plain, BatchNorm, LayerNorm, dropout .2/.5/.7, L2,
BN + dropout, BN + dropout + L2, BN + dropout + augmentation), each with the report's learning
rate, on any dataset. Two engines:

* ``--engine notebook`` (default): a papermill batch of ``notebooks/01-cnn-regularisation.ipynb``,
  one executed notebook per configuration, in ``reports/batches/<name>/`` with the summary table
  (``summary.md``, ``summary.csv``) and the overlaid curves (``curves.png``).
* ``--engine python``: the same runs in this process, summary in ``reports/sweeps/<name>/``
  with the class distribution, a grid of samples and the best run's confusion matrix.

Every run has its own record under ``reports/runs/`` either way, and the folder holds the
collection record (``collection.json`` of kind ``ablation``, read by
``lab.runs.records.load_collection``). ``--seeds 3`` (or ``--seeds 0,1,2``) runs every configuration
once per seed (``lab.studies.seeds``); the notebook engine runs the seeds of a configuration in one
notebook, and a repeated command runs only the seeds not yet recorded. ``make run`` runs it
offline on scikit-learn's embedded digits, enlarged to 16x16, with 3 seeds. On BloodMNIST itself:

    python -m lab.studies.ablation --dataset bloodmnist --epochs 60 --patience 10
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time

from lab.runs import plots
from lab.tasks.classification import CLASSIFICATION
from lab.runs.comparison import check_baseline
from lab.runs.confidence import decimals, format_estimate, proportion_interval
from lab.config import RunConfig
from lab.studies.seeds import parse_argument
from lab.studies.sweep import SweepResult, run_sweep
from lab.tasks import TASKS

# (name, overrides): the report's configurations and learning rates.
E1_VARIANTS: list[dict] = [
    {"name": "1-plain", "learning_rate": 1e-3},
    {"name": "2-batchnorm", "normalization": "batch", "learning_rate": 5e-4},
    {"name": "3-layernorm", "normalization": "layer", "learning_rate": 5e-4},
    {"name": "4a-dropout0.2", "dropout_rate": 0.2, "learning_rate": 1e-3},
    {"name": "4b-dropout0.5", "dropout_rate": 0.5, "learning_rate": 1e-3},
    {"name": "4c-dropout0.7", "dropout_rate": 0.7, "learning_rate": 1e-3},
    {"name": "5-l2", "l2": 1e-4, "learning_rate": 1e-3},
    {"name": "6-bn-dropout", "normalization": "batch", "dropout_rate": 0.5, "learning_rate": 1e-4},
    {"name": "7-bn-dropout-l2", "normalization": "batch", "dropout_rate": 0.5, "l2": 1e-4, "learning_rate": 1e-3},
    {"name": "8-bn-dropout-augment", "normalization": "batch", "dropout_rate": 0.5, "augment": True,
     "learning_rate": 1e-4},
]

# The switches the ablation varies, then the usual classification summary (lab.runs.records).
COLUMNS = ["name", "normalization", "dropout_rate", "l2", "augment", "learning_rate",
           *(c for c in TASKS["classification"].summary_columns if c not in ("val_macro_auc", "test_loss"))]


def run_ablation(base: RunConfig, *, name: str = "e1-ablation", variants: list[dict] | None = None,
                 resume: bool = False, baseline: str | None = None,
                 seeds: int | str | list[int] | None = None) -> SweepResult:
    """Runs the E1 ablation on ``base`` (once per seed of ``seeds``, ``lab.studies.seeds``) and writes its
    summary and figures; the summary compares every configuration with ``baseline`` (a
    configuration's name; default: the first, ``lab.runs.comparison``)."""
    data = CLASSIFICATION.load_data(base)  # streamed when the configuration says so
    columns = COLUMNS if seeds is None else ["name", "seed", *COLUMNS[1:]]
    # Each seed draws its own splits: with seeds the sweep loads the data of each seed (once).
    result = run_sweep(base, variants or E1_VARIANTS, name=name, columns=columns,
                       data=data if seeds is None else None, resume=resume, kind="ablation", baseline=baseline,
                       seeds=seeds)
    folder = result.summary_dir
    plots.save(plots.sample_grid(data.x_train, data.y_train, data.class_names, seed=base.seed,
                                 title=f"{data.name}: samples per class"), folder / "samples.png")
    plots.save(plots.class_distribution({s: data.class_counts(s) for s in ("train", "val", "test")},
                                        data.class_names, title=f"{data.name}: class distribution"),
               folder / "class_distribution.png")
    finished = [r for r in result.runs if r.status == "completed" and r.metrics.get("val_loss") is not None]
    if finished:
        best = min(finished, key=lambda r: r.metrics["val_loss"])
        shutil.copyfile(best.path / "plots" / "confusion_matrix.png", folder / "best_confusion_matrix.png")
        # With the digits its test split supports, and its exact binomial interval (lab.runs.confidence).
        n = int(best.config["data"]["sizes"]["test"])
        accuracy = proportion_interval(round(best.metrics["test_accuracy"] * n), n)
        auc = best.metrics.get("test_macro_auc")
        auc = "none" if auc is None else f"{auc:.{decimals(accuracy.standard_error, n)}f}"
        (folder / "best_run.txt").write_text(
            f"best by validation loss: {best.name} ({best.run_id}), test accuracy {format_estimate(accuracy, n)} "
            f"on {n} test images, test macro AUC {auc}\n")
    return result


def notebook_batch_spec(base: RunConfig, variants: list[dict], *, name: str, workers: int = 1,
                        baseline: str | None = None, seeds: int | str | list[int] | None = None):
    """The ablation as a papermill batch of the E1 notebook (one notebook per configuration, which
    runs all its ``seeds``), which its collection record calls an ablation; its summary compares
    them with ``baseline``."""
    from lab.studies.batch import spec_from_dict
    from lab.studies.notebooks import NOTEBOOK_DIR

    shared = {"dataset": base.dataset, "dataset_size": base.dataset_size, "pipeline_size": base.pipeline_size,
              "epochs": base.epochs, "early_stopping_patience": base.early_stopping_patience,
              "batch_size": base.batch_size, "seed": base.seed, "normalization": "none", "dropout_rate": 0.0,
              "l2": 0.0, "augment": False, "quick": False}
    runs = [dict(variant) for variant in variants]  # each job's name becomes its run's name
    spec = spec_from_dict({"notebook": str(NOTEBOOK_DIR / "01-cnn-regularisation.ipynb"), "name": name,
                           "parameters": shared, "runs": runs, "workers": workers, "baseline": baseline,
                           **({"seeds": seeds} if seeds is not None else {})})
    return dataclasses.replace(spec, kind="ablation")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="digits", help="registry name (default: digits, offline)")
    parser.add_argument("--pipeline-size", type=int, default=None,
                        help="resize images in the pipeline (default: 16 for digits, the data's own size otherwise)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=8, help="early-stopping patience on val loss")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=parse_argument, default=None,
                        help="run each configuration once per seed: a count from --seed (3) or a list (0,1,2)")
    parser.add_argument("--name", default="e1-ablation", help="summary folder under reports/sweeps/")
    parser.add_argument("--only", nargs="*", help="run only these configuration names (e.g. 1-plain 2-batchnorm)")
    parser.add_argument("--resume", action="store_true",
                        help="python engine: reuse runs already recorded with the same configuration "
                             "(the notebook engine always resumes an interrupted batch; --fresh restarts it)")
    parser.add_argument("--engine", choices=("notebook", "python"), default="notebook")
    parser.add_argument("--workers", type=int, default=1, help="notebook engine: notebooks run at once")
    parser.add_argument("--fresh", action="store_true", help="notebook engine: forget earlier results, rerun all")
    parser.add_argument("--baseline", help="the configuration the summary compares the others with (default: the "
                                           "first run, e.g. 1-plain)")
    args = parser.parse_args(argv)

    pipeline_size = args.pipeline_size or (16 if args.dataset == "digits" else None)
    # The switches are set explicitly (not left to the builder's defaults) so that the table
    # shows "none" / 0.0 for the runs that do not use them.
    base = RunConfig(dataset=args.dataset, pipeline_size=pipeline_size, model="cnn", epochs=args.epochs,
                     normalization="none", dropout_rate=0.0, l2=0.0,
                     early_stopping_patience=args.patience, batch_size=args.batch_size, limit=args.limit,
                     seed=args.seed, aug_rotation=0.1, aug_flip="horizontal" if args.dataset != "digits" else None,
                     tags=["e1"])
    variants = E1_VARIANTS
    if args.only:
        variants = [v for v in E1_VARIANTS if v["name"] in args.only]
        if not variants:
            parser.error(f"--only matched no configuration; names: {', '.join(v['name'] for v in E1_VARIANTS)}")
    try:
        check_baseline(args.baseline, [v["name"] for v in variants])
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    failed: list[str] = []
    if args.engine == "notebook":
        from lab.studies.batch import run_batch

        spec = notebook_batch_spec(base, variants, name=args.name, workers=args.workers, baseline=args.baseline,
                                   seeds=args.seeds)
        batch = run_batch(spec, fresh=args.fresh)
        summary = batch.folder / "summary.md"
        failed = [record["name"] for record in batch.records if record["status"] == "failed"]
    else:
        result = run_ablation(base, name=args.name, variants=variants, resume=args.resume, baseline=args.baseline,
                              seeds=args.seeds)
        summary = result.summary_dir / "results.md"
    print()
    print(summary.read_text())
    print(f"Summary, curves and figures: {summary.parent}  ({time.perf_counter() - started:.0f} s)")
    if failed:  # a script running the ablation must see that a configuration failed (stalled or diverged is a result)
        print(f"{len(failed)} configuration(s) failed: {', '.join(failed)}; see the error column above and the "
              f"executed notebooks in {summary.parent / 'notebooks'}.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
