"""Hyperparameter searches with keras-tuner, whose trials are ordinary run records.

    from lab.studies.tuning import cnn_space, search

    result = search({"dataset": "bloodmnist", "model": "cnn", "epochs": 20}, cnn_space(),
                    tuner="bayesian", objective="val_accuracy", max_trials=30, name="e1-cnn")
    result.best_hyperparameters, result.trials, result.best_config(epochs=60)

Modules:

* ``lab.studies.tuning.space``: search spaces as plain dicts (``cnn_space()``, ``transfer_space()``).
* ``lab.studies.tuning.tuner``: objectives named as in the run records, oracles by name, the tuner.
* ``lab.studies.tuning.search``: ``search(...)``, resume, exports, ``SearchResult``.
* ``python -m lab.studies.tuning SPEC.json``: a search from a JSON spec, as one process or as
  keras-tuner's chief and workers (see the README, "Searches and scale-out").
"""

from lab.studies.tuning.search import SearchResult, search, searches_dir, trial_run
from lab.studies.tuning.space import cnn_space, parse_space, transfer_space
from lab.studies.tuning.tuner import TUNERS, make_objective, record_metrics

__all__ = ["SearchResult", "TUNERS", "cnn_space", "make_objective", "parse_space", "record_metrics", "search",
           "searches_dir", "transfer_space", "trial_run"]
