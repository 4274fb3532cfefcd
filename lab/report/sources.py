"""What a report's SOURCE names: a batch, sweep, search or ablation (by folder or name), a run
folder, run ids, or ``tag:NAME``, resolved to the run records it holds. A group of runs is read
from its collection record (``lab.runs.records.load_collection``), older kits' folders included.

An unknown source is refused with ``UnknownSourceError``, whose message lists what exists.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Sequence

from lab.system import paths
from lab.runs.collection import FOLDERS
from lab.runs.records import (Collection, Run, is_collection, list_collections, load_collection, load_run, load_runs,
                         read_index)

# What a SOURCE may start with: a folder kind (``batch:``, ``sweep:``, ``search:``: the folder of
# that name under reports/batches, sweeps or searches) or ``ablation:`` (the ablation of that name,
# whichever engine wrote it).
KINDS = (*FOLDERS, "ablation")


class UnknownSourceError(ValueError):
    """A SOURCE that names no batch, sweep, search, run or tag; the message lists what exists."""


@dataclasses.dataclass
class Source:
    """The runs a report is built from, and where they came from.

    Attributes:
        kind: "batch", "sweep", "search", "ablation" (a collection's kind), "run", "runs" (run ids)
            or "tag".
        name: the collection's or the tag's name (or the run ids).
        runs: the run records, in the source's order.
        reports_dir: the reports directory holding ``runs/``.
        folder: the batch, sweep, search or run folder (None for run ids and tags).
        objective: a search's objective (metric, "min" or "max"); None elsewhere.
        notes: facts about the source the runs do not say (a batch job that failed before training).
        collection: the collection record of a batch, sweep, search or ablation (what it varied
            and fixed); None for runs named by id, folder or tag.
    """

    kind: str
    name: str
    runs: list[Run]
    reports_dir: Path
    folder: Path | None = None
    objective: tuple[str, str] | None = None
    notes: list[str] = dataclasses.field(default_factory=list)
    collection: Collection | None = None

    @property
    def label(self) -> str:
        return {"runs": "Runs", "run": "Run", "tag": "Runs tagged"}.get(self.kind, self.kind.capitalize()) \
            + f" {self.name}"


def resolve_source(source: str | os.PathLike | Sequence[str | os.PathLike], *,
                   reports_dir: str | os.PathLike | None = None) -> Source:
    """Finds the runs a SOURCE names.

    Args:
        source: a batch, sweep, search or ablation folder or name (optionally ``batch:``,
            ``sweep:``, ``search:`` or ``ablation:`` + name), a run folder, ``tag:NAME``, a run
            id, or a list of run ids/tags.
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
    # Not created: a report only reads, and a refusal must leave no folder behind.
    return Path(reports_dir).expanduser().resolve() if reports_dir else paths.reports_dir(create=False)


def _resolve_one(item: str, root: Path) -> Source:
    prefix, _, rest = item.partition(":")
    if prefix == "tag" and rest:
        runs = load_runs(root, tags=[rest])
        if not runs:
            raise UnknownSourceError(f"No run carries the tag {rest!r}. " + _listing(root))
        return Source("tag", rest, runs, root)
    if prefix == "ablation" and rest:
        found = [c.folder for c in list_collections(root) if c.kind == "ablation" and c.name == rest]
        if not found:
            raise UnknownSourceError(f"There is no ablation named {rest!r}. " + _listing(root))
        return _from_folder(found[0])
    if prefix in FOLDERS and rest:
        folder = root / FOLDERS[prefix] / rest
        if not is_collection(folder):
            raise UnknownSourceError(f"There is no {prefix} named {rest!r} ({folder} holds no collection record). "
                                     + _listing(root))
        return _from_folder(folder)
    path = Path(item).expanduser()
    if path.is_dir():
        if is_collection(path):
            return _from_folder(path.resolve())
        if (path / "metrics.json").exists():
            run = load_run(path.resolve())
            return Source("run", run.run_id, [run], path.resolve().parent.parent, folder=path.resolve())
        raise UnknownSourceError(f"{path} is a folder but neither a batch, sweep, search or ablation (a collection "
                                 f"record) nor a run (metrics.json). " + _listing(root))
    named = [kind for kind, folder in FOLDERS.items() if is_collection(root / folder / item)]
    if len(named) > 1:
        raise UnknownSourceError(f"{item!r} names a {' and a '.join(named)}; say which with "
                                 + " or ".join(f"'{kind}:{item}'" for kind in named) + ".")
    if named:
        return _from_folder(root / FOLDERS[named[0]] / item)
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


def _from_folder(folder: Path) -> Source:
    """The runs of a collection folder (``reports/<kind>s/<name>``), as its record names them."""
    record = load_collection(folder)
    runs = record.runs()
    notes = record.notes()
    if not runs:
        raise ValueError(f"The {record.kind} {folder} holds no finished run record yet; nothing to report. "
                         + " ".join(notes))
    return Source(record.kind, folder.name, runs, record.reports_dir, folder=folder, objective=record.objective,
                  notes=notes, collection=record)


def available(reports_dir: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """What a SOURCE can name: batches, sweeps, searches, tags (with run counts) and the latest runs."""
    root = _root(reports_dir)
    found = {folder: sorted(p.name for p in (root / folder).glob("*")
                            if not p.name.startswith(".") and is_collection(p))
             for folder in FOLDERS.values()}
    entries = read_index(root) if (root / "runs").exists() else []
    tags = collections.Counter(tag for entry in entries for tag in entry.get("tags") or [])
    found["tags"] = [f"{tag} ({count} runs)" for tag, count in sorted(tags.items())]
    found["latest runs"] = [entry["run_id"] for entry in entries[-10:]]
    return found


def _listing(root: Path) -> str:
    """What exists under ``root``; for a folder that holds no run and no collection, that it may
    be the wrong folder (a mistyped ``--reports-dir``), since listing nothing would not say so."""
    found = available(root)
    if not any(found.values()):
        state = "does not exist" if not root.exists() else "holds no run records, batches, sweeps or searches"
        return (f"The reports folder {root} {state}: is it the wrong folder? Pass the folder that holds runs/ "
                f"(--reports-dir, reports_dir=, or $LAB_REPORTS_DIR; the default is ./reports).")
    lines = [f"  {kind}: {', '.join(names) if names else '(none)'}" for kind, names in found.items()]
    return f"What exists under {root}:\n" + "\n".join(lines)
