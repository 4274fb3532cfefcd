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
                folder), config_hash, seed and configuration (the seed the run used and the
                configuration it repeats: runs of one configuration over several seeds share
                it, ``lab.studies.seeds``), and what the kind adds (a batch's job, parameters and
                attempt; a search's trial and score). A batch job that failed before training
                has one entry with run_id None. Members written before seeds were recorded
                read back with seed None and their name as configuration.
    started, finished, seconds   when the writing process started and finished (finished is None
                while a batch or a search is running), and the seconds between
    command     how it was made: argv, the Python call and its arguments, the lab version
    details     what only this kind has (a search's tuner, objective, space and resume hashes;
                a batch's notebook, kernel and planned jobs)
    written     when the record was last written

This module is the format and its one writer, ``write_collection`` (atomic: a reader sees the
previous record or the new one), with what the writers share (``now``, ``command``, ``member``,
what varied). The one reader is ``lab.runs.records.load_collection`` (and ``list_collections``), which
the report, TensorBoard's HParams writer and resuming use; it also reads folders written before
this record existed (``sweep.json``; ``batch.jsonl`` with ``spec.json``; ``search.json`` with
``trials.csv``), leaving them as written.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from lab.system import atomic

if TYPE_CHECKING:  # lab.runs.records reads collections with this module's format: it imports this one
    from lab.runs.records import Collection, Run

COLLECTION_NAME = "collection.json"
COLLECTION_VERSION = 1
KINDS = ("sweep", "batch", "search", "ablation")
# The folder under reports/ of each kind's collections; an ablation is in its engine's (sweeps or batches).
FOLDERS = {"batch": "batches", "sweep": "sweeps", "search": "searches"}
# The files that marked a collection before collection.json (kept readable: ``load_collection``).
LEGACY_MARKERS = {"batch": "batch.jsonl", "sweep": "sweep.json", "search": "search.json"}
# Member keys every kind writes; the rest are the kind's own.
MEMBER_KEYS = ("run_id", "name", "status", "path", "config_hash", "seed", "configuration")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Configuration keys that say which run it is, not how it was set up: never "fixed" nor "varied".
_RUN_KEYS = {"name", "tags", "config_hash", "created", "record_version", "environment", "data", "verbose",
             "reports_dir", "run_id"}


def now() -> str:
    """The local time as collection records (and run records) write it."""
    return time.strftime(TIME_FORMAT)


def command(call: str, **arguments: Any) -> dict[str, Any]:
    """How a collection was made: this process's argv, the Python call and its arguments, the kit's version."""
    from lab import __version__

    return {"argv": list(sys.argv), "call": call, "arguments": _jsonable(arguments), "lab_version": __version__}


def member(run: Run, **extra: Any) -> dict[str, Any]:
    """A member entry for a run record, with the kind's own keys (``extra``; ``configuration``
    defaults to the run's name, which a per-seed run keeps)."""
    return {"run_id": run.run_id, "name": run.name, "status": run.status,
            "config_hash": run.config.get("config_hash"), "seed": run.config.get("seed"),
            "configuration": run.name, **extra}


def with_seed_keys(entry: dict[str, Any]) -> dict[str, Any]:
    """A member with ``seed`` and ``configuration``: as written, else None and its name (a member
    written before they were recorded; ``lab.runs.records.load_collection`` reads old folders so)."""
    return {"seed": None, "configuration": entry.get("name"), **entry}


def write_collection(folder: str | os.PathLike, *, kind: str, name: str, varied: dict[str, Any],
                     fixed: dict[str, Any], members: Iterable[dict[str, Any]], started: str | None,
                     finished: str | None = None, command: dict[str, Any] | None = None,
                     details: dict[str, Any] | None = None) -> Path:
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
        The folder (``lab.runs.records.load_collection`` reads it back).

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
        entries.append({"config_hash": None, **with_seed_keys(entry),
                        "path": f"runs/{entry['run_id']}" if entry["run_id"] else None})
    seconds = None
    if started and finished:
        seconds = time.mktime(time.strptime(finished, TIME_FORMAT)) - time.mktime(time.strptime(started, TIME_FORMAT))
    record = {"version": COLLECTION_VERSION, "kind": kind, "name": name, "varied": varied, "fixed": fixed,
              "members": entries, "started": started, "finished": finished, "seconds": seconds,
              "command": command or {}, "details": details or {}, "written": now()}
    folder = Path(folder)
    atomic.write_json(folder / COLLECTION_NAME, _jsonable(record))
    return folder


def rewrite(collection: Collection, **changes: Any) -> Path:
    """Writes a collection's record again with ``changes`` (``finished=now()``, new ``members``...),
    everything else as it was."""
    fields = {"kind": collection.kind, "name": collection.name, "varied": collection.varied,
              "fixed": collection.fixed, "members": collection.members, "started": collection.started,
              "finished": collection.finished, "command": collection.command, "details": collection.details}
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ValueError(f"A collection record has no field(s) {unknown} to change; fields: {', '.join(fields)}.")
    return write_collection(collection.folder, **{**fields, **changes})


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
