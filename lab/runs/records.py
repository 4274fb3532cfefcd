"""Run records: one folder per run, one append-only index, and results tables.

A run folder under ``reports/runs/`` holds

    config.json        the full flat configuration, the data summary, versions, the hash
    history.csv        one row per epoch (losses, accuracies, epoch_seconds)
    metrics.json       train/val/test loss and accuracy, macro AUC, best epoch, status...
    predictions.npz    test labels and predicted probabilities (re-scorable)
    model.keras        the best model (optional)
    plots/*.png        learning curves, confusion matrix, sample predictions, class counts

A run is written into ``.partial-<run_id>`` and renamed to ``<run_id>`` only when complete,
then one line is appended to ``index.jsonl``. An interrupted run therefore leaves only a
``.partial-*`` folder, which no reader trusts, and the index never names a run that is not
fully on disk. (If a process dies between the rename and the append, ``rebuild_index`` adds
the missing line.) A partial folder says which process writes it (``owner.json``: host and
pid); the next run in the same reports directory removes those whose process is gone
(``clean_partial``), never one that a live process is writing.

The runs of a sweep, batch, search or ablation are named by the group's collection record, read
here (``load_collection``, ``list_collections``: a ``Collection`` with its member runs, older
kits' folders included); its format and writer are ``lab.runs.collection``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from lab.system import atomic, paths
from lab.runs.collection import (COLLECTION_NAME, COLLECTION_VERSION, FOLDERS, LEGACY_MARKERS, member, space_domains,
                            split_configuration, with_seed_keys)
from lab.config.base import renamed_fields
from lab.tasks import TASKS

INDEX_NAME = "index.jsonl"
PARTIAL_PREFIX = ".partial-"
OWNER_NAME = "owner.json"  # in a partial folder: the host and process writing it

# The record format. Version 2 renamed configuration fields, version 3 InstanceConfig's
# input_size (to pipeline_size) and the segmentation encoder (to backbone); older records are
# read with their fields under the new names (``upgrade_config``, from lab.config's RENAMED).
# Version 4 split the status "diverged": a run that never learned is "stalled" (``upgrade_metrics``).
RECORD_VERSION = 4
STALLED_SINCE = 4  # the first record version that says "stalled"

# A run's status, the one vocabulary of records, tables, sweeps, searches, batches and reports,
# from the best outcome to the worst (``worst_status``):
#   completed  it trained and learned (or its task has no chance level to judge learning by)
#   stalled    its loss stayed finite, but its validation accuracy never got clearly above chance
#   diverged   its training loss became NaN or infinite, or grew far above where it had been
#   failed     an exception ended it; the record holds the error and the traceback
# A stalled or diverged run is a result: sweeps and searches reuse it, a batch exits 0 for it.
STATUSES = ("completed", "stalled", "diverged", "failed")
RESULT_STATUSES = STATUSES[:3]
# How the reason of a run that never learned starts, then as now (the divergence monitor writes it,
# ``upgrade_metrics`` reads an older record's by it).
NEVER_LEARNED = "never learned"


@dataclasses.dataclass
class Run:
    """A finished run read back from disk."""

    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def name(self) -> str:
        return self.metrics.get("name") or self.config.get("name") or self.run_id

    @property
    def status(self) -> str:
        return self.metrics.get("status", "unknown")

    @property
    def task(self) -> str:
        return self.config.get("task", "classification")  # version-1 classification records had none

    @property
    def split_sizes(self) -> dict[str, int]:
        """The images in each split of the run's data (``config.json``'s ``data.sizes``; {} in older records)."""
        return (self.config.get("data") or {}).get("sizes") or {}

    def history(self) -> pd.DataFrame:
        """The per-epoch history (empty if the run failed before its first epoch)."""
        return read_history(self.path)

    def predictions(self) -> dict[str, np.ndarray]:
        """``y_true``, ``y_prob`` (and ``class_names``) of the test set."""
        with np.load(self.path / "predictions.npz", allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def rescore(self) -> dict[str, float]:
        """Recomputes the test metrics from the saved predictions (segmentation runs: from the masks)."""
        from lab.runs.evaluation import classification_metrics, segmentation_metrics

        pred = self.predictions()
        if "y_prob" not in pred and "y_pred" in pred:  # a segmentation run saves true and predicted masks
            # Scored as the run scored them: its background class and its all-background threshold.
            options = {"background_class": int(pred["background_class"])} if "background_class" in pred else {}
            if self.config.get("background_flag_ratio") is not None:
                options["flag_ratio"] = float(self.config["background_flag_ratio"])
            return segmentation_metrics(pred["y_true"], pred["y_pred"], [str(c) for c in pred["class_names"]],
                                        prefix="test_", **options)
        return classification_metrics(pred["y_true"], pred["y_prob"], prefix="test_")


class RunWriter:
    """Creates a run's folder, lets training fill it, then publishes it atomically.

    Example:
        >>> writer = RunWriter(config_dict, name="bn-dropout")
        >>> (writer.path / "history.csv")  # training writes here
        >>> writer.publish(metrics)         # rename to the final folder, append to the index
    """

    def __init__(self, config: dict[str, Any], *, name: str, reports_dir: str | os.PathLike | None = None):
        self.root = paths.runs_dir(reports_dir)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:60]
        self.run_id = f"{stamp}-{safe}-{uuid.uuid4().hex[:6]}"
        self.path = self.root / f"{PARTIAL_PREFIX}{self.run_id}"
        clean_partial(reports_dir)  # leftovers of runs killed before they finished
        (self.path / "plots").mkdir(parents=True)
        atomic.write_json(self.path / OWNER_NAME, {"host": socket.gethostname(), "pid": os.getpid(),
                                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.config = config

    @property
    def final_path(self) -> Path:
        return self.root / self.run_id

    def publish(self, metrics: dict[str, Any]) -> Path:
        """Writes config and metrics, renames the folder to its final name, appends the index."""
        atomic.write_json(self.path / "config.json", self.config)
        atomic.write_json(self.path / "metrics.json", metrics)
        (self.path / OWNER_NAME).unlink(missing_ok=True)  # a published run has no writer
        os.replace(self.path, self.final_path)
        entry = {"run_id": self.run_id, "config_hash": self.config.get("config_hash"), **_index_fields(metrics)}
        atomic.append_line(self.root / INDEX_NAME, json.dumps(entry, sort_keys=True, default=atomic.json_default))
        return self.final_path

    def discard(self) -> None:
        """Removes the partial folder (used when a run is abandoned before any result)."""
        shutil.rmtree(self.path, ignore_errors=True)


def read_history(run_path: Path) -> pd.DataFrame:
    """A run folder's per-epoch history (empty when the run failed before its first epoch)."""
    path = Path(run_path) / "history.csv"
    try:
        return pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _index_fields(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "status", "dataset", "model", "task", "created", "tags",
            *dict.fromkeys(c for task in TASKS.values() for c in task.summary_columns))
    return {k: metrics[k] for k in keys if k in metrics}


def read_index(reports_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Returns the index entries, oldest first, skipping a truncated last line."""
    return atomic.read_lines(paths.runs_dir(reports_dir, create=False) / INDEX_NAME)


def rebuild_index(reports_dir: str | os.PathLike | None = None) -> int:
    """Appends index lines for complete run folders the index does not name; returns how many."""
    root = paths.runs_dir(reports_dir)
    known = {e["run_id"] for e in read_index(reports_dir)}
    added = 0
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and not folder.name.startswith(".") and folder.name not in known \
                and (folder / "metrics.json").exists():
            run = load_run(folder)
            entry = {"run_id": folder.name, "config_hash": run.config.get("config_hash"), **_index_fields(run.metrics)}
            atomic.append_line(root / INDEX_NAME, json.dumps(entry, sort_keys=True))
            added += 1
    return added


def clean_partial(reports_dir: str | os.PathLike | None = None, *, unowned_after_seconds: float = 86400) -> int:
    """Deletes the folders of interrupted runs that no live process is writing; returns how many.

    A folder is removed when its ``owner.json`` names a process of this host that is gone (a
    run killed with SIGKILL, a machine that rebooted mid-run). One of another host is left alone
    (its process cannot be asked) unless it has not changed for ``unowned_after_seconds``; so is
    one without an owner file (an older kit's, or one being created this instant) until then.
    """
    root = paths.runs_dir(reports_dir)
    removed = 0
    for folder in root.glob(f"{PARTIAL_PREFIX}*"):
        if _abandoned(folder, unowned_after_seconds):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _abandoned(folder: Path, unowned_after_seconds: float) -> bool:
    try:
        owner = json.loads((folder / OWNER_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        owner = None
    if owner and owner.get("host") == socket.gethostname():
        return not _alive(int(owner.get("pid", -1)))
    try:
        return time.time() - folder.stat().st_mtime >= unowned_after_seconds
    except FileNotFoundError:
        return False  # published or removed meanwhile


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def load_run(path: str | os.PathLike) -> Run:
    """Reads one run folder."""
    path = Path(path)
    if path.name.startswith(PARTIAL_PREFIX):
        raise ValueError(f"{path} is an interrupted run (its folder was never published); it has no results.")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path} is not a run folder: {error.filename} is missing.") from error
    return Run(path=path, config=upgrade_config(config), metrics=upgrade_metrics(metrics, config))


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded configuration under the current field names (older records are kept as written)."""
    if config.get("record_version", 1) >= RECORD_VERSION:
        return config
    upgraded = dict(config)
    # Old names whose values changed meaning too, before the plain renames.
    if "trainable" in upgraded:  # "head" trained only the new output layer: unfreeze=0
        trainable = upgraded.pop("trainable")
        upgraded.setdefault("unfreeze", 0 if trainable == "head" else upgraded.get("unfreeze"))
    if "trainable_encoder" in upgraded:
        trainable = upgraded.pop("trainable_encoder")
        upgraded.setdefault("unfreeze", None if trainable is None else ("all" if trainable else 0))
    # A record without its task (an early one) is a Mask R-CNN run when its model is maskrcnn.
    task = upgraded.get("task") or ("instance" if upgraded.get("model") == "maskrcnn" else None)
    renamed = renamed_fields(task)
    upgraded = {renamed[key][0] if key in renamed else key: value for key, value in upgraded.items()}
    if upgraded.get("weights") == "none":  # version 1 wrote a random segmentation encoder so
        upgraded["weights"] = None
    return upgraded


def upgrade_metrics(metrics: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A recorded run's metrics in the current vocabulary: before version 4 a run that never learned
    (finite loss, accuracy at chance) was recorded as "diverged"; it reads as "stalled"."""
    if config.get("record_version", 1) >= STALLED_SINCE or metrics.get("status") != "diverged" \
            or not str(metrics.get("divergence_reason") or "").startswith(NEVER_LEARNED):
        return metrics
    return {**metrics, "status": "stalled"}


def worst_status(statuses: Iterable[str]) -> str:
    """The worst of these statuses in ``STATUSES``' order (a batch job's, from its runs'); "completed"
    when there are none (words outside ``STATUSES``, an index line without one, count for nothing)."""
    return max((s for s in statuses if s in STATUSES), key=STATUSES.index, default="completed")


def load_runs(
    reports_dir: str | os.PathLike | None = None,
    *,
    run_ids: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    config_hash: str | None = None,
    status: str | Iterable[str] | None = None,
    where: Callable[[Run], bool] | None = None,
) -> list[Run]:
    """Loads the indexed runs, oldest first, optionally filtered: the one run lookup that
    sweeps, searches and batches use.

    Args:
        reports_dir: the reports directory (default: the kit's).
        run_ids: keep only these runs.
        tags: keep runs that carry all of these tags.
        config_hash: keep runs of this configuration (``RunConfig.config_hash()``).
        status: keep runs with this status, or one of these (``STATUSES``).
        where: keep runs for which this returns True.
    """
    root = paths.runs_dir(reports_dir, create=False)
    wanted = set(run_ids) if run_ids is not None else None
    statuses = {status} if isinstance(status, str) else (set(status) if status is not None else None)
    if statuses is not None and not statuses <= set(STATUSES):
        raise ValueError(f"Unknown run status(es) {sorted(statuses - set(STATUSES))}; a run's status is one of "
                         f"{', '.join(STATUSES)}.")
    # An older record's "diverged" may read as "stalled" (``upgrade_metrics``): its index line
    # cannot say, so such a run is filtered by its status once read.
    indexed = None if statuses is None else statuses | ({"diverged"} if "stalled" in statuses else set())
    tags = set(tags or ())
    runs = []
    for entry in read_index(reports_dir):
        # The index line holds the run's id, hash, status and tags: filter before reading the folder.
        if (wanted is not None and entry["run_id"] not in wanted) \
                or (config_hash is not None and entry.get("config_hash") != config_hash) \
                or (indexed is not None and entry.get("status") not in indexed) \
                or (tags and "tags" in entry and not tags <= set(entry["tags"] or [])):
            continue
        if not (root / entry["run_id"]).is_dir():
            continue  # deleted by hand
        run = load_run(root / entry["run_id"])
        if statuses is not None and run.status not in statuses:
            continue
        if tags and not tags <= set(run.config.get("tags") or []):
            continue
        if where is not None and not where(run):
            continue
        runs.append(run)
    return runs


def summary_columns(runs: Iterable[Run]) -> list[str]:
    """The summary columns of the runs' tasks (``lab.tasks.TASKS``), in order, without repeats."""
    tasks = dict.fromkeys(run.task for run in runs) or {"classification": None}
    return list(dict.fromkeys(c for task in tasks for c in TASKS[task].summary_columns))


def results_table(runs: Iterable[Run], columns: list[str] | None = None) -> pd.DataFrame:
    """One row per run: its name, status and metrics, plus any config columns asked for.

    Args:
        runs: runs from ``load_runs`` (or a sweep).
        columns: metric or config keys to show (default: the name and ``summary_columns``,
            those present).
    """
    runs = list(runs)
    rows = []
    for run in runs:
        rows.append({"run_id": run.run_id, **run.config, **run.metrics, "name": run.name})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    columns = columns or [c for c in ["name", *summary_columns(runs)] if c in frame.columns]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"No run has the column(s) {missing}. Available: {', '.join(sorted(frame.columns))}.")
    return frame[columns].reset_index(drop=True)


def to_markdown(frame: pd.DataFrame, floatfmt: str = ".4f", runs: Iterable[Run] | None = None) -> str:
    """A markdown table for reports (``tabulate`` does the layout); with the ``runs`` behind it,
    each split's scores get the digits that split supports (``lab.runs.confidence.column_decimals``)."""
    if runs is not None:
        from lab.runs.confidence import column_decimals  # scipy: only where a table of runs is written

        digits = column_decimals(list(frame.columns), [run.split_sizes for run in runs])
        floatfmt = tuple(f".{digits[c]}f" if c in digits else floatfmt for c in frame.columns)
    return frame.to_markdown(index=False, floatfmt=floatfmt)


# -- collections: the runs of a sweep, batch, search or ablation (format: lab.runs.collection) ---------

@dataclasses.dataclass
class Collection:
    """A collection record read back (``load_collection``).

    Attributes:
        folder: the collection's folder.
        kind: "sweep", "batch", "search" or "ablation".
        name: its name.
        varied: key -> the values it took (a search: the domain of each key).
        fixed: the configuration its members share.
        members: one dict per run (``lab.runs.collection.MEMBER_KEYS`` and the kind's own keys), in order.
        started, finished, seconds, command, written: when and how it was made.
        details: what only this kind records.
        version: the record's format; 0 for a folder read from an older kit's files.
    """

    folder: Path
    kind: str
    name: str
    varied: dict[str, Any]
    fixed: dict[str, Any]
    members: list[dict[str, Any]]
    started: str | None = None
    finished: str | None = None
    seconds: float | None = None
    command: dict[str, Any] = dataclasses.field(default_factory=dict)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    written: str | None = None
    version: int = COLLECTION_VERSION

    def __post_init__(self) -> None:
        # Every member says its seed and configuration, also in a record written before they were.
        self.members = [with_seed_keys(entry) for entry in self.members]

    @property
    def reports_dir(self) -> Path:
        """The reports folder holding ``runs/`` (the collection folder is ``<reports>/<kind>s/<name>``)."""
        return self.folder.parent.parent

    @property
    def objective(self) -> tuple[str, str] | None:
        """A search's objective (metric, "min" or "max"); None for other kinds."""
        objective = self.details.get("objective")
        return (str(objective[0]), str(objective[1])) if objective else None

    def run_path(self, entry: dict[str, Any]) -> Path:
        """Where a member's run record is (members name their runs by id under ``<reports>/runs``)."""
        return self.reports_dir / "runs" / entry["run_id"]

    def runs(self) -> list[Run]:
        """The members' run records, in order (a member whose record is gone is left out: ``notes``)."""
        return [load_run(self.run_path(m)) for m in self.members
                if m.get("run_id") and (self.run_path(m) / "metrics.json").exists()]

    def notes(self) -> list[str]:
        """What the runs do not say: members without a record, jobs that failed and why."""
        notes = []
        for entry in self.members:
            what = f"Batch job {entry['job']!r}" if "job" in entry else f"Run {entry['name']!r}"
            present = entry.get("run_id") and (self.run_path(entry) / "metrics.json").exists()
            if entry.get("run_id") and not present:
                notes.append(f"{what}: run {entry['run_id']} has no record in {self.reports_dir / 'runs'} (deleted?).")
            if entry.get("status") == "failed" and "job" in entry and entry.get("error"):
                error = str(entry["error"]).strip().splitlines()[-1][:300]
                how = "failed before training any run" if not entry.get("run_id") else "failed (its notebook raised)"
                note = f"{what} {how}: {error}"
                if note not in notes:  # a job with several runs: said once
                    notes.append(note)
        return notes


def load_collection(source: str | os.PathLike, *, reports_dir: str | os.PathLike | None = None,
                    kind: str | None = None) -> Collection:
    """Reads a collection by folder or by name.

    Args:
        source: a collection folder, or a name looked up under ``reports_dir``'s sweeps,
            batches and searches.
        reports_dir: where to look a name up (default: the kit's reports folder).
        kind: the kind a name must have (needed when a sweep and a batch share a name).

    Raises:
        FileNotFoundError: no collection of that name or in that folder (the message lists those
            that exist).
        ValueError: a name several collections have (say which with ``kind``), or a record of
            a newer format.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return _read(path.resolve())
    found = [c for c in list_collections(reports_dir) if c.name == str(source) and kind in (None, c.kind)]
    if len(found) > 1:
        raise ValueError(f"{str(source)!r} names several collections ({', '.join(c.kind for c in found)}); pass "
                         f"kind= to say which.")
    if not found:
        names = [f"{c.kind}:{c.name}" for c in list_collections(reports_dir)]
        raise FileNotFoundError(f"No collection named {str(source)!r}" + (f" of kind {kind!r}" if kind else "")
                                + f". Collections: {', '.join(names) or '(none)'}.")
    return found[0]


def list_collections(reports_dir: str | os.PathLike | None = None) -> list[Collection]:
    """Every collection under the reports folder's sweeps, batches and searches, by folder and name."""
    root = Path(reports_dir).expanduser().resolve() if reports_dir else paths.reports_dir()
    found = []
    for folder_name in dict.fromkeys(FOLDERS.values()):
        parent = root / folder_name
        if parent.is_dir():
            found += [_read(folder) for folder in sorted(parent.iterdir())
                      if folder.is_dir() and not folder.name.startswith(".") and _marker(folder)]
    return found


def is_collection(folder: str | os.PathLike) -> bool:
    """Whether a folder holds a collection record (or an older kit's sweep, batch or search files)."""
    return Path(folder).is_dir() and _marker(Path(folder)) is not None


def _marker(folder: Path) -> Path | None:
    """The file that makes a folder a collection: ``collection.json``, or an older kit's marker."""
    for name in (COLLECTION_NAME, *LEGACY_MARKERS.values()):
        if (folder / name).exists():
            return folder / name
    return None


def _read(folder: Path) -> Collection:
    marker = _marker(folder)
    if marker is None:
        raise FileNotFoundError(f"{folder} holds no collection record ({COLLECTION_NAME}, or an older kit's "
                                f"{', '.join(LEGACY_MARKERS.values())}).")
    if marker.name != COLLECTION_NAME:
        kind = next(kind for kind, name in LEGACY_MARKERS.items() if name == marker.name)
        read_legacy = {"batch": _legacy_batch, "sweep": _legacy_sweep, "search": _legacy_search}[kind]
        return _current_statuses(read_legacy(folder))
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("version", 0) > COLLECTION_VERSION:
        raise ValueError(f"{marker} is of format {record['version']}, newer than this kit reads "
                         f"({COLLECTION_VERSION}); update lab.")
    fields = {f.name for f in dataclasses.fields(Collection)} - {"folder"}
    return _current_statuses(Collection(folder=folder, **{k: v for k, v in record.items() if k in fields}))


def _current_statuses(collection: Collection) -> Collection:
    """The collection with each "diverged" member's status as its run record reads: an older kit
    wrote "diverged" for a run that never learned, which reads as "stalled" (``upgrade_metrics``)."""
    for entry in collection.members:
        if entry.get("status") == "diverged" and entry.get("run_id") \
                and (collection.run_path(entry) / "metrics.json").exists():
            entry["status"] = load_run(collection.run_path(entry)).status
    return collection


# -- folders written before collection.json ------------------------------------------------------

def _index_entries(folder: Path) -> dict[str, dict[str, Any]]:
    return {entry["run_id"]: entry for entry in read_index(folder.parent.parent)}


def _legacy_sweep(folder: Path) -> Collection:
    """``sweep.json``: the run ids behind the table; what varied is read from the runs' configurations."""
    manifest = json.loads((folder / LEGACY_MARKERS["sweep"]).read_text(encoding="utf-8"))
    members = [{k: entry.get(k) for k in ("run_id", "name", "status", "config_hash")}
               for entry in manifest.get("runs", [])]
    collection = Collection(folder, "sweep", manifest.get("name", folder.name), {}, {}, members,
                            written=manifest.get("written"), version=0)
    for m in collection.members:
        m["path"] = f"runs/{m['run_id']}"
    collection.varied, collection.fixed = split_configuration(run.config for run in collection.runs())
    return collection


def _legacy_batch(folder: Path) -> Collection:
    """``batch.jsonl`` (one line per committed attempt: the last of each job counts) in ``spec.json``'s order."""
    lines = atomic.read_lines(folder / LEGACY_MARKERS["batch"])
    committed = {record["key"]: record for record in lines}
    tries: dict[str, int] = {}
    for record in lines:
        tries[record["key"]] = tries.get(record["key"], 0) + 1
    spec_path = folder / "spec.json"
    spec = json.loads(spec_path.read_text(encoding="utf-8")) if spec_path.exists() else {}
    order = [job["key"] for job in spec.get("jobs", [])]
    keys = [key for key in order if key in committed] + [key for key in committed if key not in order]
    index = _index_entries(folder)
    members = []
    for key in keys:
        record = committed[key]
        job = {"job": record["name"], "key": key, "parameters": record.get("parameters", {}),
               "attempt": record.get("attempt"), "seconds": record.get("seconds"), "error": record.get("error"),
               "notebook": record.get("notebook"), "finished": record.get("finished"), "tries": tries[key]}
        for run_id in record.get("run_ids") or [None]:
            entry = index.get(run_id, {})
            status = "failed" if record["status"] == "failed" else entry.get("status", record["status"])
            members.append({"run_id": run_id, "name": entry.get("name", record["name"]), "status": status,
                            "path": f"runs/{run_id}" if run_id else None,
                            "config_hash": entry.get("config_hash"), **job})
    parameters = [committed[key].get("parameters", {}) for key in keys]
    varied, fixed = split_configuration(parameters)
    details = {k: spec[k] for k in ("notebook", "kernel") if k in spec}
    if spec.get("jobs"):
        details["jobs"] = [{"name": job["name"], "key": job["key"]} for job in spec["jobs"]]
    return Collection(folder, "batch", folder.name, varied, spec.get("parameters", fixed), members,
                      details=details, version=0)


def _legacy_search(folder: Path) -> Collection:
    """``search.json`` (what was asked) and ``trials.csv`` (one row per trial); without the table (a
    search stopped before its export) the trials are the runs tagged with the search's name and id."""
    manifest = json.loads((folder / LEGACY_MARKERS["search"]).read_text(encoding="utf-8"))
    name = manifest.get("name", folder.name)
    index = _index_entries(folder)
    trials = folder / "trials.csv"
    members = []
    if trials.exists() and trials.stat().st_size:
        for row in pd.read_csv(trials, dtype={"trial": str, "run_id": str}).to_dict("records"):
            run_id = row.get("run_id") if isinstance(row.get("run_id"), str) else None
            if run_id is None:
                continue  # a trial that has no run record (keras-tuner's, still running when exported)
            entry = index.get(run_id, {})
            members.append({"run_id": run_id, "name": entry.get("name", run_id), "status": entry.get("status"),
                            "path": f"runs/{run_id}", "config_hash": entry.get("config_hash"),
                            "trial": row.get("trial"), "tuner_status": row.get("tuner_status"),
                            "score": None if pd.isna(row.get("score")) else row.get("score")})
    else:
        tags = [f"search:{name}", f"search-id:{manifest.get('search_id')}"]
        for run in load_runs(folder.parent.parent, tags=tags):
            trial = next((t[len("trial:"):] for t in run.config.get("tags") or [] if t.startswith("trial:")), None)
            members.append({**member(run, trial=trial), "path": f"runs/{run.run_id}"})
    details = {k: v for k, v in manifest.items() if k not in ("name", "base", "updated")}
    return Collection(folder, "search", name, space_domains(manifest.get("space") or {}), manifest.get("base") or {},
                      members, details=details, written=manifest.get("updated"), version=0)
