"""``python -m lab.studies.tuning SPEC.json``: one search from a JSON spec.

The spec holds ``search``'s arguments: ``base`` (flat configuration values of any task: its
model names the task), ``space``, and optionally ``tuner``, ``objective`` (a name or
``[name, "min"|"max"]``), ``max_trials``,
``name``, ``resume``, ``seed``, ``max_epochs``, ``factor``, ``hyperband_iterations``,
``max_consecutive_failed_trials``, ``verbose``, and ``retrain``: the final retraining of the best
configuration once the search is done (``SearchResult.retrain``), a dict of configuration changes
that may hold ``seeds`` (a count or a list, ``lab.studies.seeds``), e.g. ``{"epochs": 60, "seeds": 3}``.
``--seeds 3`` (or ``--seeds 0,1,2``) retrains with those seeds, with the spec's changes if it has any.

Run it once for a search in one process. For keras-tuner's chief/worker mode run the same
command on every machine with these variables set (the chief serves the oracle, the workers
train):

    KERASTUNER_TUNER_ID=chief   KERASTUNER_ORACLE_IP=<chief address> KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=tuner0  KERASTUNER_ORACLE_IP=<chief address> KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=tuner1  ...
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.studies.seeds import parse_argument
from lab.studies.tuning.search import search

KEYS = {"base", "space", "tuner", "objective", "max_trials", "name", "resume", "seed", "max_epochs", "factor",
        "hyperband_iterations", "max_consecutive_failed_trials", "verbose", "retrain"}


def load_spec(path: str | Path) -> dict:
    """Reads a search spec, refusing unknown keys."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ValueError(f"Search spec {path} does not exist.") from error
    except json.JSONDecodeError as error:
        raise ValueError(f"Search spec {path} is not valid JSON: {error}") from error
    if not isinstance(spec, dict) or "base" not in spec or "space" not in spec:
        raise ValueError(f"Search spec {path} must be a JSON object with at least 'base' and 'space'.")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ValueError(f"Unknown search spec key(s) {unknown}. Valid keys: {', '.join(sorted(KEYS))}.")
    if not isinstance(spec.get("retrain", {}), dict):
        raise ValueError(f"'retrain' must map configuration fields to values (and may hold 'seeds'), received "
                         f"{spec['retrain']!r}.")
    if isinstance(spec.get("objective"), list):
        spec["objective"] = tuple(spec["objective"])
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path)
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", help="continue the saved search of this name")
    resume.add_argument("--fresh", action="store_true", help="start afresh (a saved search is moved aside)")
    parser.add_argument("--seeds", type=parse_argument, default=None,
                        help="retrain the best configuration once per seed: a count (3) or a list (0,1,2)")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
        if args.resume or args.fresh:
            spec["resume"] = bool(args.resume)
        retrain = spec.pop("retrain", None)
        if args.seeds is not None:
            retrain = {**(retrain or {}), "seeds": args.seeds}
        result = search(spec.pop("base"), spec.pop("space"), **spec)
        final = result.retrain(**retrain) if retrain is not None and result.best else None
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    done = len(result.trials)
    print(f"search {result.name}: {done} trial(s); " + (
        f"best {result.objective.name} = {result.best['score']:.4f} (trial {result.best['trial']}, run "
        f"{result.best['run_id']})" if result.best else "results are written by the chief"), flush=True)
    if final is not None:
        print(f"final retraining: {len(final.runs)} run(s) ({', '.join(r.status for r in final.runs)}); summary in "
              f"{final.summary_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
