"""Collection records: a sweep, a batch, a search or an ablation as one ``collection.json``.

A group of runs is written the same way whatever made it. Its folder (``reports/sweeps/<name>``,
``reports/batches/<name>`` or ``reports/searches/<name>``; an ablation lives where its engine
writes: a sweep's folder or a batch's) holds ``collection.json``:

    version     the format (COLLECTION_VERSION); a newer one is refused with a clear error
    kind        "sweep", "batch", "search" or "ablation"
    name        the collection's name (its folder's)
    varied      what varied: key -> the values it took (a search: the space's domain of each key,
                a list of choices or {"min", "max"})
    fixed       the configuration every member shares (a sweep's or search's base, a batch's
                shared notebook parameters)
    members     one entry per run, in order: run_id, name, status, path (under the reports
                folder), config_hash, and what the kind adds (a batch's job, parameters and
                attempt; a search's trial and score). A batch job that failed before training
                has one entry with run_id None.
    started, finished, seconds   when the writing process started and finished (finished is None
                while a batch or a search is running), and the seconds between
    command     how it was made: argv, the Python call and its arguments, the lab version
    details     what only this kind has (a search's tuner, objective, space and resume hashes;
                a batch's notebook, kernel and planned jobs)
    written     when the record was last written

``write_collection`` is the one writer (atomic: a reader sees the previous record or the new
one); ``load_collection`` the one reader, which the report, TensorBoard's HParams writer and
resuming use. It also reads folders written before this record existed (``sweep.json``;
``batch.jsonl`` with ``spec.json``; ``search.json`` with ``trials.csv``), leaving them as written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from lab import atomic, paths

if TYPE_CHECKING:
    from lab.records import Run

# lab.records imports this module to offer its reader, so what this module needs of lab.records
# (reading run records) is imported where it is used.

COLLECTION_NAME = "collection.json"
COLLECTION_VERSION = 1
KINDS = ("sweep", "batch", "search", "ablation")
# The folder under reports/ of each kind's collections; an ablation is in its engine's (sweeps or batches).
FOLDERS = {"batch": "batches", "sweep": "sweeps", "search": "searches"}
# The files that marked a collection before collection.json (kept readable: ``load_collection``).
LEGACY_MARKERS = {"batch": "batch.jsonl", "sweep": "sweep.json", "search": "search.json"}
# Member keys every kind writes; the rest are the kind's own.
MEMBER_KEYS = ("run_id", "name", "status", "path", "config_hash")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Configuration keys that say which run it is, not how it was set up: never "fixed" nor "varied".
_RUN_KEYS = {"name", "tags", "config_hash", "created", "record_version", "environment", "data", "verbose",
             "reports_dir", "run_id"}


@dataclasses.dataclass
class Collection:
    """A collection record read back (``load_collection``).

    Attributes:
        folder: the collection's folder.
        kind: "sweep", "batch", "search" or "ablation".
        name: its name.
        varied: key -> the values it took (a search: the domain of each key).
        fixed: the configuration its members share.
        members: one dict per run (``MEMBER_KEYS`` and the kind's own keys), in order.
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

    @property
    def reports_dir(self) -> Path:
        """The reports folder holding ``runs/`` (the collection folder is ``<reports>/<kind>s/<name>``)."""
        return self.folder.parent.parent

    @property
    def run_ids(self) -> list[str]:
        return [m["run_id"] for m in self.members if m.get("run_id")]

    @property
    def objective(self) -> tuple[str, str] | None:
        """A search's objective (metric, "min" or "max"); None for other kinds."""
        objective = self.details.get("objective")
        return (str(objective[0]), str(objective[1])) if objective else None

    def run_path(self, member: dict[str, Any]) -> Path:
        return self.reports_dir / "runs" / member["run_id"]

    def runs(self) -> list[Run]:
        """The members' run records, in order (a member whose record is gone is left out: ``notes``)."""
        from lab.records import load_run

        return [load_run(self.run_path(m)) for m in self.members
                if m.get("run_id") and (self.run_path(m) / "metrics.json").exists()]

    def notes(self) -> list[str]:
        """What the runs do not say: members without a record, jobs that failed and why."""
        notes = []
        for member in self.members:
            what = f"Batch job {member['job']!r}" if "job" in member else f"Run {member['name']!r}"
            present = member.get("run_id") and (self.run_path(member) / "metrics.json").exists()
            if member.get("run_id") and not present:
                notes.append(f"{what}: run {member['run_id']} has no record in {self.reports_dir / 'runs'} (deleted?).")
            if member.get("status") == "failed" and "job" in member and member.get("error"):
                error = str(member["error"]).strip().splitlines()[-1][:300]
                how = "failed before training any run" if not member.get("run_id") else "failed (its notebook raised)"
                note = f"{what} {how}: {error}"
                if note not in notes:  # a job with several runs: said once
                    notes.append(note)
        return notes

    def to_record(self) -> dict[str, Any]:
        """The record as ``write_collection`` writes it."""
        return {"version": COLLECTION_VERSION, "kind": self.kind, "name": self.name, "varied": self.varied,
                "fixed": self.fixed, "members": self.members, "started": self.started, "finished": self.finished,
                "seconds": self.seconds, "command": self.command, "details": self.details, "written": self.written}


def now() -> str:
    """The local time as collection records (and run records) write it."""
    return time.strftime(TIME_FORMAT)


def command(call: str, **arguments: Any) -> dict[str, Any]:
    """How a collection was made: this process's argv, the Python call and its arguments, the kit's version."""
    from lab import __version__

    return {"argv": list(sys.argv), "call": call, "arguments": _jsonable(arguments), "lab_version": __version__}


def member(run: Run, **extra: Any) -> dict[str, Any]:
    """A member entry for a run record, with the kind's own keys (``extra``)."""
    return {"run_id": run.run_id, "name": run.name, "status": run.status,
            "config_hash": run.config.get("config_hash"), **extra}


def write_collection(folder: str | os.PathLike, *, kind: str, name: str, varied: dict[str, Any],
                     fixed: dict[str, Any], members: Iterable[dict[str, Any]], started: str | None,
                     finished: str | None = None, command: dict[str, Any] | None = None,
                     details: dict[str, Any] | None = None) -> Collection:
    """Writes ``<folder>/collection.json`` atomically (the previous record stays whole until then).

    Args:
        folder: the collection's folder, ``<reports>/<sweeps|batches|searches>/<name>``.
        kind: one of ``KINDS``.
        name: the collection's name.
        varied: key -> the values it took (or a search's domains).
        fixed: the shared configuration.
        members: one dict per run, each with ``run_id`` (None for a batch job that trained
            nothing), ``name`` and ``status``; ``path`` is set here.
        started, finished: ``now()`` when the process started and finished (None: running).
        command: from ``command(...)``.
        details: the kind's own facts.

    Returns:
        The Collection as written.

    Raises:
        ValueError: an unknown kind, or a member without run_id, name or status.
    """
    if kind not in KINDS:
        raise ValueError(f"Unknown collection kind {kind!r}; valid kinds: {', '.join(KINDS)}.")
    entries = []
    for entry in members:
        missing = [key for key in ("run_id", "name", "status") if key not in entry]
        if missing:
            raise ValueError(f"A member of collection {name!r} needs {missing}; received {entry!r}.")
        entries.append({"config_hash": None, **entry,
                        "path": f"runs/{entry['run_id']}" if entry["run_id"] else None})
    seconds = None
    if started and finished:
        seconds = time.mktime(time.strptime(finished, TIME_FORMAT)) - time.mktime(time.strptime(started, TIME_FORMAT))
    collection = Collection(Path(folder), kind, name, _jsonable(varied), _jsonable(fixed), _jsonable(entries),
                            started=started, finished=finished, seconds=seconds, command=command or {},
                            details=_jsonable(details or {}), written=now())
    atomic.write_json(collection.folder / COLLECTION_NAME, collection.to_record())
    return collection


def rewrite(collection: Collection, **changes: Any) -> Collection:
    """Writes a collection's record again with ``changes`` (``finished=now()``, new ``members``...),
    everything else as it was."""
    fields = {"kind": collection.kind, "name": collection.name, "varied": collection.varied,
              "fixed": collection.fixed, "members": collection.members, "started": collection.started,
              "finished": collection.finished, "command": collection.command, "details": collection.details}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ValueError(f"A collection record has no field(s) {unknown} to change; fields: {', '.join(fields)}.")
    return write_collection(collection.folder, **{**fields, **changes})


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
        return {"batch.jsonl": _legacy_batch, "sweep.json": _legacy_sweep, "search.json": _legacy_search}[
            marker.name](folder)
    record = json.loads(marker.read_text(encoding="utf-8"))
    if record.get("version", 0) > COLLECTION_VERSION:
        raise ValueError(f"{marker} is of format {record['version']}, newer than this kit reads "
                         f"({COLLECTION_VERSION}); update lab.")
    fields = {f.name for f in dataclasses.fields(Collection)} - {"folder"}
    return Collection(folder=folder, **{k: v for k, v in record.items() if k in fields})


# -- folders written before collection.json ------------------------------------------------------

def _index_entries(folder: Path) -> dict[str, dict[str, Any]]:
    from lab.records import read_index

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
    import pandas as pd

    from lab.records import load_runs

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


# -- what varied ---------------------------------------------------------------------------------

def split_configuration(configurations: Iterable[dict[str, Any]]) -> tuple[dict[str, list], dict[str, Any]]:
    """(varied, fixed) of flat configurations: the keys whose values differ with their values in
    order of appearance, and the keys every configuration gives the same value."""
    configurations = list(configurations)
    keys = list(dict.fromkeys(k for config in configurations for k in config if k not in _RUN_KEYS))
    varied, fixed = {}, {}
    for key in keys:
        values = [config.get(key) for config in configurations]
        texts = list(dict.fromkeys(json.dumps(v, sort_keys=True, default=str) for v in values))
        if len(texts) > 1:
            varied[key] = [json.loads(text) for text in texts]
        elif configurations:
            fixed[key] = values[0]
    return varied, fixed


def values_taken(key: str, configurations: Iterable[dict[str, Any]]) -> list[Any]:
    """The distinct values ``key`` takes in the configurations, in order of appearance."""
    texts = dict.fromkeys(json.dumps(config.get(key), sort_keys=True, default=str) for config in configurations)
    return [json.loads(text) for text in texts]


def space_domains(space: dict[str, Any]) -> dict[str, Any]:
    """A search space's domains as a collection's ``varied``: the choices of a list or ``values``
    entry, ``{"min", "max"}`` of a range (``{"log": [a, b]}`` included)."""
    domains = {}
    for key, entry in space.items():
        if isinstance(entry, list):
            domains[key] = entry
        elif isinstance(entry, dict) and "values" in entry:
            domains[key] = entry["values"]
        elif isinstance(entry, dict) and "log" in entry:
            domains[key] = {"min": entry["log"][0], "max": entry["log"][1]}
        elif isinstance(entry, dict):
            domains[key] = {"min": entry.get("min"), "max": entry.get("max")}
        else:
            domains[key] = [entry]
    return domains


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    try:
        return atomic.json_default(value)
    except TypeError:
        return str(value)  # a value JSON cannot hold (a class, a callable) is recorded by its text
