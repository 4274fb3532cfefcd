"""What a report's SOURCE names: a batch, sweep or search (by folder or name), a run folder, run
ids, or ``tag:NAME``, resolved to the run records it holds.

An unknown source is refused with ``UnknownSourceError``, whose message lists what exists.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

from lab import atomic, paths
from lab.records import Run, load_run, load_runs, read_index

KINDS = ("batch", "sweep", "search")
# The file that marks each kind of source folder (written by lab.batch, lab.sweep, lab.tuning).
MARKERS = {"batch": "batch.jsonl", "sweep": "sweep.json", "search": "search.json"}
FOLDERS = {"batch": "batches", "sweep": "sweeps", "search": "searches"}


class UnknownSourceError(ValueError):
    """A SOURCE that names no batch, sweep, search, run or tag; the message lists what exists."""


@dataclasses.dataclass
class Source:
    """The runs a report is built from, and where they came from.

    Attributes:
        kind: "batch", "sweep", "search", "run", "runs" (run ids) or "tag".
        name: the batch, sweep, search or tag name (or the run ids).
        runs: the run records, in the source's order.
        reports_dir: the reports directory holding ``runs/``.
        folder: the batch, sweep, search or run folder (None for run ids and tags).
        objective: a search's objective (metric, "min" or "max"); None elsewhere.
        notes: facts about the source the runs do not say (a batch job that failed before training).
    """

    kind: str
    name: str
    runs: list[Run]
    reports_dir: Path
    folder: Path | None = None
    objective: tuple[str, str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        return {"runs": "Runs", "run": "Run", "tag": "Runs tagged"}.get(self.kind, self.kind.capitalize()) \
            + f" {self.name}"


def resolve_source(source: str | os.PathLike | Sequence[str | os.PathLike], *,
                   reports_dir: str | os.PathLike | None = None) -> Source:
    """Finds the runs a SOURCE names.

    Args:
        source: a batch, sweep or search folder or name (optionally ``batch:``, ``sweep:`` or
            ``search:`` + name), a run folder, ``tag:NAME``, a run id, or a list of run ids/tags.
        reports_dir: the reports directory (default: the kit's, ``$LAB_REPORTS_DIR``); a source
            folder given as a path carries its own (the folder two levels up).

    Returns:
        A Source with its runs, read from their records.

    Raises:
        UnknownSourceError: nothing of that name, or a name that is several things; the message
            lists the batches, sweeps, searches, tags and latest runs that exist.
        ValueError: a source that exists but holds no run record.
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise UnknownSourceError("No source given. " + _listing(_root(reports_dir)))
    if len(items) == 1:
        return _resolve_one(str(items[0]), _root(reports_dir))
    root = _root(reports_dir)
    runs: dict[str, Run] = {}
    for item in map(str, items):
        if item.startswith("tag:"):
            found = _resolve_one(item, root).runs
        else:
            found = _run_ids([item], root)
        runs.update((run.run_id, run) for run in found)
    return Source("runs", ", ".join(map(str, items)), list(runs.values()), root)


def _root(reports_dir: str | os.PathLike | None) -> Path:
    return Path(reports_dir).expanduser().resolve() if reports_dir else paths.reports_dir()


def _resolve_one(item: str, root: Path) -> Source:
    prefix, _, rest = item.partition(":")
    if prefix == "tag" and rest:
        runs = load_runs(root, tags=[rest])
        if not runs:
            raise UnknownSourceError(f"No run carries the tag {rest!r}. " + _listing(root))
        return Source("tag", rest, runs, root)
    if prefix in KINDS and rest:
        folder = root / FOLDERS[prefix] / rest
        if not (folder / MARKERS[prefix]).exists():
            raise UnknownSourceError(f"There is no {prefix} named {rest!r} ({folder / MARKERS[prefix]} does not "
                                     f"exist). " + _listing(root))
        return _from_folder(folder, prefix)
    path = Path(item).expanduser()
    if path.is_dir():
        for kind, marker in MARKERS.items():
            if (path / marker).exists():
                return _from_folder(path.resolve(), kind)
        if (path / "metrics.json").exists():
            run = load_run(path.resolve())
            return Source("run", run.run_id, [run], path.resolve().parent.parent, folder=path.resolve())
        raise UnknownSourceError(f"{path} is a folder but neither a batch ({MARKERS['batch']}), a sweep "
                                 f"({MARKERS['sweep']}), a search ({MARKERS['search']}) nor a run (metrics.json). "
                                 + _listing(root))
    named = [kind for kind in KINDS if (root / FOLDERS[kind] / item / MARKERS[kind]).exists()]
    if len(named) > 1:
        raise UnknownSourceError(f"{item!r} names a {' and a '.join(named)}; say which with "
                                 + " or ".join(f"'{kind}:{item}'" for kind in named) + ".")
    if named:
        return _from_folder(root / FOLDERS[named[0]] / item, named[0])
    if any(entry["run_id"] == item for entry in read_index(root)):
        runs = _run_ids([item], root)
        return Source("run", item, runs, root, folder=runs[0].path)
    raise UnknownSourceError(f"{item!r} is no batch, sweep, search, run folder, run id or tag:NAME under {root}. "
                             + _listing(root))


def _run_ids(run_ids: list[str], root: Path) -> list[Run]:
    runs = load_runs(root, run_ids=run_ids)
    missing = sorted(set(run_ids) - {run.run_id for run in runs})
    if missing:
        raise UnknownSourceError(f"No run record {', '.join(map(repr, missing))} in {root / 'runs'}. "
                                 + _listing(root))
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    return sorted(runs, key=lambda run: order[run.run_id])


def _from_folder(folder: Path, kind: str) -> Source:
    """The runs of a batch, sweep or search folder (``reports/<kind>s/<name>``), from its records."""
    root = folder.parent.parent
    runs_root = root / "runs"
    notes: list[str] = []
    objective = None
    if kind == "batch":
        runs, notes = _batch_runs(folder, runs_root)
    elif kind == "sweep":
        manifest = json.loads((folder / MARKERS["sweep"]).read_text(encoding="utf-8"))
        runs = []
        for entry in manifest.get("runs", []):
            path = runs_root / entry["run_id"]
            if (path / "metrics.json").exists():
                runs.append(load_run(path))
            else:
                notes.append(f"Run {entry['run_id']} of the sweep has no record in {runs_root} (deleted?).")
    else:
        manifest = json.loads((folder / MARKERS["search"]).read_text(encoding="utf-8"))
        # The trials' records carry the search's name and id as tags (lab.tuning.search).
        runs = load_runs(root, tags=[f"search:{manifest['name']}", f"search-id:{manifest.get('search_id')}"])
        if manifest.get("objective"):
            objective = (str(manifest["objective"][0]), str(manifest["objective"][1]))
    if not runs:
        raise ValueError(f"The {kind} {folder} holds no finished run record yet; nothing to report. "
                         + " ".join(notes))
    return Source(kind, folder.name, runs, root, folder=folder, objective=objective, notes=notes)


def _batch_runs(folder: Path, runs_root: Path) -> tuple[list[Run], list[str]]:
    # The last commit of each job (lab.batch.latest_records; read here without importing the batch
    # runner and its Jupyter machinery).
    committed = {record["key"]: record for record in atomic.read_lines(folder / MARKERS["batch"])}
    order = []
    spec = folder / "spec.json"
    if spec.exists():  # the spec's job order, as the batch summary has it
        order = [job["key"] for job in json.loads(spec.read_text(encoding="utf-8")).get("jobs", [])]
    keys = [key for key in order if key in committed] + [key for key in committed if key not in order]
    runs, notes = [], []
    for key in keys:
        record = committed[key]
        present = [load_run(runs_root / rid) for rid in record["run_ids"] if (runs_root / rid / "metrics.json").exists()]
        if len(present) < len(record["run_ids"]):
            notes.append(f"Batch job {record['name']!r}: {len(record['run_ids']) - len(present)} of its runs have no "
                         f"record in {runs_root}.")
        if record["status"] == "failed":
            error = (record.get("error") or "no error recorded").strip().splitlines()[-1][:300]
            what = "failed before training any run" if not present else "failed (its notebook raised)"
            notes.append(f"Batch job {record['name']!r} {what}: {error}")
        runs += present
    return runs, notes


def available(reports_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """What a SOURCE can name: batches, sweeps, searches, tags (with run counts) and the latest runs."""
    root = _root(reports_dir)
    found = {FOLDERS[kind]: sorted(p.parent.name for p in (root / FOLDERS[kind]).glob(f"*/{MARKERS[kind]}"))
             for kind in KINDS}
    entries = read_index(root) if (root / "runs").exists() else []
    tags = collections.Counter(tag for entry in entries for tag in entry.get("tags") or [])
    found["tags"] = [f"{tag} ({count} runs)" for tag, count in sorted(tags.items())]
    found["latest runs"] = [entry["run_id"] for entry in entries[-10:]]
    return found


def _listing(root: Path) -> str:
    lines = [f"  {kind}: {', '.join(names) if names else '(none)'}" for kind, names in available(root).items()]
    return f"What exists under {root}:\n" + "\n".join(lines)
