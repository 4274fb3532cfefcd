"""Batch specs: what a papermill batch runs (``lab.studies.batch`` runs it).

A spec (JSON or YAML) names the notebook, the shared parameters, and either a ``grid`` (every
combination) or a list of ``runs`` (each may carry a ``name``), and optionally ``seeds``: each
parameter set then runs once per seed (``lab.studies.seeds``), one job per seed, so that a batch resumed
with more seeds runs only the new ones. Reading a spec checks it against the notebook: a
parameter that the notebook's ``parameters`` cell does not assign is refused before anything runs
(papermill would inject it and the notebook would never read it).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any

import nbformat

from lab.runs.comparison import check_baseline
from lab.config.base import RENAMED_IN_TASK, renamed_fields
from lab.studies.notebooks import parameter_names
from lab.studies.seeds import seed_list


@dataclasses.dataclass
class Job:
    """One parameter set of a batch (with ``seeds``: one configuration with one of its seeds)."""

    label: str
    parameters: dict[str, Any]
    key: str
    seed: int | None = None


@dataclasses.dataclass
class BatchSpec:
    """What to run: a notebook, shared parameters, and the parameter sets.

    Attributes:
        notebook: path of the source notebook.
        name: the batch's folder name under ``reports/batches/``.
        parameters: values shared by every run.
        jobs: one Job per parameter set, in order.
        varied: the parameter names that differ between jobs (the summary's columns).
        workers: notebooks executed at once.
        kernel: the Jupyter kernel name passed to papermill (None: ``resolve_kernel``'s default).
        kind: what the batch's collection record calls it ("ablation" for ``lab.studies.ablation``).
        seeds: the seeds each configuration runs with (``lab.studies.seeds``); None: once, as its
            parameters say.
        baseline: the job the summary compares the others with (None: the first; ``lab.runs.comparison``).
    """

    notebook: Path
    name: str
    parameters: dict[str, Any]
    jobs: list[Job]
    varied: list[str]
    workers: int = 1
    kernel: str | None = None
    kind: str = "batch"
    seeds: list[int] | None = None
    baseline: str | None = None


def load_spec(path: str | os.PathLike) -> BatchSpec:
    """Reads a batch spec from JSON or YAML and expands its grid or runs into jobs.

    Keys: ``notebook`` (relative to the spec's folder or absolute), ``name`` (default: the
    spec's file name), ``parameters`` (shared), ``grid`` (name -> list of values) or ``runs``
    (list of dicts, each optionally with ``name``), ``workers``, ``kernel``, ``seeds`` (a count
    or a list, ``lab.studies.seeds``: every parameter set runs once per seed, the notebook's ``seed``),
    ``baseline`` (the run the summary compares the others with; ``lab.runs.comparison``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Batch spec {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ValueError(f"Batch spec {path} is not valid YAML: {error}") from error
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"Batch spec {path} is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ValueError(f"Batch spec {path} must be a mapping of keys (notebook, runs or grid, ...).")
    return spec_from_dict(raw, base_dir=path.parent, default_name=path.stem)


def spec_from_dict(raw: dict[str, Any], *, base_dir: str | os.PathLike = ".", default_name: str = "batch") -> BatchSpec:
    """Builds a BatchSpec from a dict (see ``load_spec``), refusing anything ambiguous.

    Raises:
        ValueError: a malformed spec, or a parameter (shared, in the grid or in a run) that the
            notebook's ``parameters`` cell does not assign. Nothing is written either way.
        FileNotFoundError: the notebook does not exist.
    """
    known = {"notebook", "name", "parameters", "grid", "runs", "workers", "kernel", "seeds", "baseline"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"Unknown batch spec key(s) {unknown}. Valid keys: {', '.join(sorted(known))}.")
    if "notebook" not in raw:
        raise ValueError("A batch spec needs 'notebook': the path of the notebook to run.")
    notebook = Path(raw["notebook"])
    if not notebook.is_absolute():
        candidate = Path(base_dir) / notebook
        notebook = candidate if candidate.exists() else notebook
    if not notebook.exists():
        raise FileNotFoundError(f"Notebook {raw['notebook']} does not exist (looked in {Path(base_dir)} and .).")
    if ("grid" in raw) == ("runs" in raw):
        raise ValueError("A batch spec needs exactly one of 'grid' (name -> list of values) or 'runs' (a list).")
    if not isinstance(raw.get("parameters") or {}, dict):
        raise ValueError(f"'parameters' must map parameter names to values, received {raw['parameters']!r}.")
    shared = dict(raw.get("parameters") or {})
    if "grid" in raw:
        grid = raw["grid"]
        if not isinstance(grid, dict) or not grid or any(not isinstance(v, list) or not v for v in grid.values()):
            raise ValueError(f"'grid' must map each parameter to a non-empty list of values, received {grid}.")
        sets = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        sets = [{"name": "-".join(f"{k}={v}" for k, v in s.items()), **s} for s in sets]
    else:
        if not isinstance(raw["runs"], list) or not raw["runs"] or any(not isinstance(s, dict) for s in raw["runs"]):
            raise ValueError(f"'runs' must be a non-empty list of parameter dicts, received {raw['runs']!r}.")
        sets = [dict(s) for s in raw["runs"]]
    defined = _notebook_parameters(notebook)
    _refuse_unknown_parameters(notebook, defined, shared, raw.get("grid"), raw.get("runs"))
    seeds = _spec_seeds(raw.get("seeds"), notebook, defined, shared, sets)
    # A notebook whose parameters include the run's ``name`` gets each job's name as its own.
    names_runs = "name" in defined
    jobs, labels = [], set()
    for i, values in enumerate(sets, start=1):
        label = str(values.pop("name", f"run{i}"))
        if label in labels:
            raise ValueError(f"Two runs of the batch are named {label!r}; names must be unique.")
        labels.add(label)
        parameters = {**shared, **values, **({"name": label} if names_runs else {})}
        for seed in seeds or [None]:  # one job per seed: each is committed, and resumed, on its own
            with_seed = parameters if seed is None else {**parameters, "seed": seed}
            jobs.append(Job(label, with_seed, _job_key(notebook, with_seed), seed))
    varied = sorted({k for s in sets for k in s if k in sets[0] and any(x.get(k) != sets[0][k] for x in sets)}
                    | {k for s in sets for k in s if any(k not in x for x in sets)}
                    | ({"seed"} if seeds and len(seeds) > 1 else set()))
    workers = int(raw.get("workers", 1))
    if workers < 1:
        raise ValueError(f"workers must be at least 1, received {workers}.")
    check_baseline(baseline := raw.get("baseline"), list(dict.fromkeys(job.label for job in jobs)))
    return BatchSpec(notebook=notebook, name=str(raw.get("name", default_name)), parameters=shared, jobs=jobs,
                     varied=varied, workers=workers,
                     kernel=None if raw.get("kernel") is None else str(raw["kernel"]), seeds=seeds,
                     baseline=baseline)


def _spec_seeds(seeds: Any, notebook: Path, defined: list[str], shared: dict[str, Any],
                sets: list[dict[str, Any]]) -> list[int] | None:
    """A spec's ``seeds`` as a list (a count starts at the shared ``seed``, else 0), refusing a
    notebook without a ``seed`` parameter and a parameter set that sets its own seed."""
    if seeds is None:
        return None
    if "seed" not in defined:
        raise ValueError(f"The batch spec sets 'seeds', but notebook {notebook} has no 'seed' parameter to run "
                         f"each seed with. Valid names (its 'parameters' cells): {', '.join(defined) or '(none)'}.")
    own = [str(s.get("name", f"run{i}")) for i, s in enumerate(sets, start=1) if "seed" in s]
    if own:
        raise ValueError(f"The batch spec sets 'seeds' and the parameter set(s) {own} set 'seed' too: each "
                         f"parameter set runs once per seed of 'seeds'; remove one of them.")
    return seed_list(seeds, base_seed=shared.get("seed", 0))


def _notebook_parameters(notebook: Path) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns, as a spec error if it cannot be read."""
    try:
        return parameter_names(notebook)
    except SyntaxError as error:
        # ``parameter_names`` parses the cell as Python; a magic or a typo there would otherwise
        # surface as a traceback from deep inside the spec check.
        raise ValueError(f"The parameters cell of notebook {notebook} is not plain Python ({error.msg}, line "
                         f"{error.lineno}); it must hold flat assignments such as 'epochs = 10'.") from error


def _refuse_unknown_parameters(notebook: Path, defined: list[str], shared: dict[str, Any],
                               grid: dict[str, Any] | None, runs: list[dict[str, Any]] | None) -> None:
    """Raises ValueError for any spec parameter the notebook's ``parameters`` cell does not assign.

    Papermill injects whatever it is given, so a misspelt parameter would leave the notebook on its
    default while the batch ran for minutes and the summary was labelled with a value never used.
    The ``name`` of a grid point or of a ``runs`` entry is the job's label, not a parameter
    (``spec_from_dict`` passes it on only to a notebook that defines ``name``).
    """
    places: dict[str, list[str]] = {}  # unknown parameter -> where the spec sets it
    for key in shared:
        if key not in defined:
            places.setdefault(key, []).append("'parameters'")
    for key in grid or {}:
        if key != "name" and key not in defined:
            places.setdefault(key, []).append("'grid'")
    in_runs: dict[str, list[str]] = {}  # unknown parameter -> the labels of the runs that set it
    for i, run in enumerate(runs or [], start=1):
        for key in run:
            if key != "name" and key not in defined:
                in_runs.setdefault(key, []).append(repr(str(run.get("name", f"run{i}"))))
    for key, labels in in_runs.items():
        places.setdefault(key, []).append(f"'runs' {', '.join(labels)}")
    if not places:
        return
    where = ", ".join(f"{key!r} (in {' and '.join(spots)})" for key, spots in places.items())
    if not defined and not _has_parameters_cell(notebook):
        raise ValueError(
            f"The batch spec sets parameter(s) {where}, but notebook {notebook} has no cell tagged "
            f"'parameters', so papermill would inject them where nothing reads them. Tag the notebook's "
            f"first code cell 'parameters' (flat assignments of the defaults), or remove them from the spec.")
    hints, renames = [], []
    for key in places:
        new_name, close = _new_name(key, defined), difflib.get_close_matches(key, defined, n=1)
        if new_name:  # not the close match, which would be another parameter (image_size: dataset_size)
            renames.append(f"{key!r} is now called {new_name!r}"
                           + ("" if new_name in defined else ", which the notebook does not define either"))
        elif close:
            hints.append(f"{close[0]!r} for {key!r}")
    suggestion = (f" {'; '.join(renames)}." if renames else "") + (f" Did you mean {', '.join(hints)}?" if hints else "")
    raise ValueError(
        f"Notebook {notebook} does not define the parameter(s) {where}: papermill would inject them, the "
        f"notebook would never read them, and the summary would be labelled with values that were never used. "
        f"Valid names (its 'parameters' cells): {', '.join(defined) or '(none)'}.{suggestion} Fix the spec, or "
        f"add the parameter to one of the notebook's parameters cells.")


def _new_name(key: str, defined: list[str]) -> str | None:
    """The new name of a renamed configuration key (``lab.config.base.RENAMED``, as ``train``
    refuses it), preferring one the notebook defines; None if ``key`` was not renamed.

    A notebook may be of any task, and a task may have renamed a key otherwise
    (``RENAMED_IN_TASK``): the new name the notebook's parameters cell assigns is the one meant.
    """
    names = [renamed_fields(task)[key][0] for task in (None, *RENAMED_IN_TASK) if key in renamed_fields(task)]
    return next((name for name in names if name in defined), names[0] if names else None)


def _has_parameters_cell(notebook: Path) -> bool:
    nb = nbformat.read(str(notebook), as_version=4)
    return any(cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", [])
               for cell in nb.cells)


def _job_key(notebook: Path, parameters: dict[str, Any]) -> str:
    payload = json.dumps({"notebook": notebook.name, "parameters": parameters}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
