"""Papermill batches: one notebook run over a grid or a list of parameter sets.

    python -m lab.studies.batch notebooks/batches/e4-optimizer-grid-quick.json --workers 2

A spec (JSON or YAML, read and checked by ``lab.studies.batch_spec``) names the notebook, the shared
parameters, and either a ``grid`` (every combination) or a list of ``runs``. Each parameter set
is executed by papermill in its own kernel (named explicitly), with N in parallel, and the
executed notebook is kept under ``reports/batches/<batch>/notebooks/``.

With ``seeds`` each parameter set is one job per seed. Where the notebook has a ``seeds``
parameter, one execution runs all the seeds of a parameter set still to run (it loops over them:
the kernel's start, the imports and the data are paid once); otherwise each seed is an execution
of its own, with ``seed`` set. Either way each seed is committed as its own job.

Nothing is lost or counted twice when a batch is killed at any moment and started again:

1. Each attempt runs with ``LAB_REPORTS_DIR`` pointing into its own ``.attempts/<key>-<id>/``
   folder, so the run records its notebook writes stay there until the attempt is committed.
2. When the notebook ends (its runs completed, stalled, diverged or failed) the batch's
   collection record (``collection.json``, ``lab.runs.collection``) is rewritten with the job's runs
   (or, when it trained nothing, the job alone): the commit, atomic like every write of the
   record. Each entry names the attempt, the job and its parameters.
3. Then the attempt is applied: its run folders move into ``reports/runs/`` and the run index
   (skipping any already there), its notebook moves to ``notebooks/``, and its folder goes.

On a restart, committed attempts whose folder still exists are applied again (step 3 is
idempotent), the folders of uncommitted attempts (killed mid-run) are deleted, and only the
parameter sets without a commit are run (a batch written before collection records, with its
``batch.jsonl``, resumes the same way: ``lab.runs.records.load_collection`` reads it). A failed run
is committed too and the batch goes on; ``--retry-failed`` runs the failed ones again. The
summary shows a failed job as ``failed`` even where its training runs completed, and the command
exits with 1 when any job failed (a stalled or diverged run is a result: exit 0).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from lab.system import atomic, paths
from lab.runs import collection, plots, tensorboard
from lab.system.colab import TENSORBOARD_INLINE_ENV
from lab.runs.comparison import write_comparison
# The specs are lab.studies.batch_spec's; load_spec and spec_from_dict are imported from here too.
from lab.studies.batch_spec import BatchSpec, Job, load_spec, spec_from_dict  # noqa: F401
from lab.studies.notebooks import parameter_names
from lab.system.progress import progress as progress_bar, wait_reporting_epochs, write as write_line
from lab.runs.records import (INDEX_NAME, load_collection, load_run, read_index, results_table, summary_columns, to_markdown,
                         worst_status)

# The kit's Jupyter kernel (the venv's Python), registered by `make setup`; nbval and JupyterLab
# use it by the same name. Where it is not registered (Colab) batches run in "python3".
DEFAULT_KERNEL = "lab"
FALLBACK_KERNEL = "python3"
# What a batch's collection members say of their job besides the run (lab.runs.collection).
JOB_KEYS = ("key", "parameters", "attempt", "seconds", "error", "notebook", "finished", "tries")

# -- records ----------------------------------------------------------------------------------

def batch_dir(name: str, reports_dir: str | os.PathLike | None = None) -> Path:
    root = Path(reports_dir).resolve() if reports_dir else paths.reports_dir()
    return root / "batches" / name


def committed_jobs(folder: Path) -> dict[str, dict[str, Any]]:
    """The committed jobs of a batch folder by job key, in the batch's order: the last attempt of
    each, read from the batch's collection record (``lab.runs.records.load_collection``).

    Each job holds its ``name``, ``status`` (failed when one of its runs failed or its notebook
    raised, else the worst of its runs': ``lab.runs.records.worst_status``), ``run_ids``, its
    ``members`` in the record, and ``JOB_KEYS``. A folder without a record has none.
    """
    try:
        members = load_collection(folder).members
    except FileNotFoundError:
        return {}
    jobs: dict[str, dict[str, Any]] = {}
    for entry in members:
        job = jobs.setdefault(entry["key"], {"name": entry["job"], **{k: entry.get(k) for k in JOB_KEYS},
                                             "run_ids": [], "members": []})
        job["members"].append(entry)
        if entry.get("run_id"):
            job["run_ids"].append(entry["run_id"])
    for job in jobs.values():
        job["status"] = worst_status(entry["status"] for entry in job["members"])
    return jobs


class _Commits:
    """The batch's collection record, which every commit rewrites whole (atomically): before the
    rename the job is not committed, after it the job is."""

    def __init__(self, spec: BatchSpec, folder: Path, kernel: str, command: dict[str, Any]):
        self.spec, self.folder = spec, folder
        self.members = {key: job["members"] for key, job in committed_jobs(folder).items()}
        self.lock = threading.Lock()
        self.header = dict(
            kind=spec.kind, name=spec.name, started=collection.now(), command=command,
            varied={key: collection.values_taken(key, [job.parameters for job in spec.jobs]) for key in spec.varied},
            fixed=spec.parameters,
            details={"notebook": str(spec.notebook), "kernel": kernel,
                     "jobs": [{"name": j.label, "key": j.key, "parameters": j.parameters} for j in spec.jobs]})

    def tries(self, key: str) -> int:
        return max((entry.get("tries") or 1 for entry in self.members.get(key, [])), default=0)

    def commit(self, key: str, members: list[dict[str, Any]]) -> None:
        """Records a finished job (call with ``lock`` held)."""
        self.members[key] = members
        self.write(finished=None)

    def write(self, *, finished: str | None) -> Path:
        order = [job.key for job in self.spec.jobs]
        keys = [key for key in order if key in self.members] + [key for key in self.members if key not in order]
        return collection.write_collection(self.folder, **self.header, finished=finished,
                                           members=[entry for key in keys for entry in self.members[key]])


# -- running ----------------------------------------------------------------------------------

@dataclasses.dataclass
class BatchResult:
    name: str
    folder: Path
    records: list[dict[str, Any]]
    table: pd.DataFrame


class _Progress:
    """A line per start and finish (kept in logs), and a done/total bar with an ETA (terminals only)."""

    def __init__(self, total: int, skipped: int, name: str = "batch"):
        self.total, self.done, self.running = total, skipped, 0
        self.lock = threading.Lock()
        # The ETA counts only the notebooks run now: the ones a resumed batch skips took no time.
        self.bar = progress_bar(total=total, initial=skipped, desc=name, unit="run")

    def started(self, job: Job) -> None:
        with self.lock:
            self.running += 1
            write_line(f"[start] {job.label}  ({self.done}/{self.total} done, {self.running} running)")

    def finished(self, job: Job, status: str, seconds: float, error: str | None, jobs: int = 1) -> None:
        """``jobs``: how many jobs the notebook ran (the seeds of one configuration run together)."""
        with self.lock:
            self.running -= 1
            self.done += jobs
            tail = f": {error.splitlines()[-1][:200]}" if error else ""
            write_line(f"[{status}] {job.label} in {seconds:.0f} s  ({self.done}/{self.total} done, "
                       f"{self.running} running){tail}")
            self.bar.update(jobs)

    def close(self) -> None:
        self.bar.close()


def run_batch(
    spec: BatchSpec,
    *,
    workers: int | None = None,
    kernel: str | None = None,
    reports_dir: str | os.PathLike | None = None,
    retry_failed: bool = False,
    fresh: bool = False,
    timeout: float | None = None,
) -> BatchResult:
    """Runs every job of a spec that has no committed record yet, then writes the summary.

    Args:
        spec: from ``load_spec``.
        workers: notebooks at once (default: the spec's).
        kernel: Jupyter kernel name (default: the spec's, else ``lab``, else ``python3``; see
            ``resolve_kernel``).
        reports_dir: where ``batches/`` and ``runs/`` are (default: the kit's reports dir).
        retry_failed: run jobs whose last record is ``failed`` again.
        fresh: forget this batch's records and notebooks and run everything again.
        timeout: seconds allowed per notebook (None: no limit).

    Returns:
        A BatchResult with the committed records and the summary table.
    """
    kernel = resolve_kernel(kernel or spec.kernel)
    folder = batch_dir(spec.name, reports_dir)
    if fresh and folder.exists():
        shutil.rmtree(folder)
    (folder / "notebooks").mkdir(parents=True, exist_ok=True)
    runs_root = paths.runs_dir(reports_dir)
    _recover(folder, runs_root)
    commits = _Commits(spec, folder, kernel, collection.command(
        "lab.studies.batch.run_batch", spec=spec.name, workers=workers or spec.workers, kernel=kernel,
        retry_failed=retry_failed, fresh=fresh, timeout=timeout))
    commits.write(finished=None)  # what the batch runs, before it runs it

    committed = committed_jobs(folder)
    todo = [j for j in spec.jobs
            if j.key not in committed or (retry_failed and committed[j.key]["status"] == "failed")]
    skipped = len(spec.jobs) - len(todo)
    if skipped:
        print(f"[resume] {skipped} of {len(spec.jobs)} runs already finished; running {len(todo)}.", flush=True)
    progress = _Progress(len(spec.jobs), skipped, spec.name)
    children: set[subprocess.Popen] = set()
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers or spec.workers)
    try:
        futures = [executor.submit(_run_job, spec, jobs, folder, runs_root, kernel, timeout,
                                   progress, commits, children) for jobs in _executions(spec, todo)]
        for future in concurrent.futures.as_completed(futures):
            future.result()  # re-raise a bug in the batch machinery itself (not a notebook error)
    except BaseException:
        for child in list(children):  # Ctrl-C or an internal error: stop the running notebooks
            _terminate(child)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        progress.close()
    return summarise(spec, folder, runs_root, commits)


def resolve_kernel(kernel: str | None) -> str:
    """The Jupyter kernel a batch's notebooks run in.

    Args:
        kernel: a kernel name, or None for the kit's: ``lab`` where ``make setup`` registered it,
            else ``python3`` (this Python's own kernel; in Colab, for example), with a note.

    Returns:
        A registered kernel name, for papermill.

    Raises:
        ValueError: the named kernel is not registered (before any notebook runs; the registered
            ones are listed).
    """
    from jupyter_client.kernelspec import KernelSpecManager

    # The kernels papermill's subprocess will see: it runs with this interpreter (sys.executable).
    available = sorted(KernelSpecManager().find_kernel_specs())
    if kernel is None:
        if DEFAULT_KERNEL in available:
            return DEFAULT_KERNEL
        print(f"[kernel] no Jupyter kernel named {DEFAULT_KERNEL!r} (`make setup` registers it): running the "
              f"notebooks in {FALLBACK_KERNEL!r}, the kernel of this Python ({sys.executable}).", flush=True)
        return FALLBACK_KERNEL
    if kernel not in available:
        raise ValueError(f"No Jupyter kernel named {kernel!r}; registered: {', '.join(available) or 'none'}. "
                         f"`make setup` registers {DEFAULT_KERNEL!r}; leave the kernel unset to use it.")
    return kernel


def _executions(spec: BatchSpec, todo: list[Job]) -> list[list[Job]]:
    """The notebook executions that run the jobs: one per job, or, where the notebook takes a
    ``seeds`` parameter, one per configuration for all its seeds still to run (the kernel's start,
    imports and data loading are then paid once, not once per seed)."""
    if not spec.seeds or "seeds" not in parameter_names(spec.notebook):
        return [[job] for job in todo]
    groups: dict[str, list[Job]] = {}
    for job in todo:
        groups.setdefault(job.label, []).append(job)
    return list(groups.values())


def _run_job(spec: BatchSpec, jobs: list[Job], folder: Path, runs_root: Path, kernel: str, timeout: float | None,
             progress: _Progress, commits: _Commits, children: set) -> None:
    """Executes the notebook once for ``jobs`` (one job, or the seeds of one configuration), then
    commits each job with its runs and applies the attempt."""
    job = jobs[0]
    attempt = folder / ".attempts" / f"{job.key}-{uuid.uuid4().hex[:8]}"
    (attempt / "reports").mkdir(parents=True)
    params = attempt / "parameters.json"
    # Several seeds in one execution (``_executions``): the notebook loops over ``seeds``; the first
    # is also its ``seed``.
    parameters = {**job.parameters, **({"seeds": [j.seed for j in jobs]} if len(jobs) > 1 else {})}
    params.write_text(json.dumps(parameters))  # JSON is YAML: lists and dicts keep their types
    output = attempt / "executed.ipynb"
    # LAB_PROGRESS=0: the executed notebooks are kept, and a bar's text would be stored in them (the
    # batch's own bar counts the notebooks); LAB_TENSORBOARD_INLINE=0: no TensorBoard server per job.
    # TensorFlow's start-up lines are kept out of them and of papermill.log by the kit itself
    # (lab/system/tf_logging.py), in the kernel.
    env = {**os.environ, "LAB_REPORTS_DIR": str(attempt / "reports"), "LAB_DATA_DIR": str(paths.data_dir()),
           "PYTHONUNBUFFERED": "1", "LAB_PROGRESS": "0", TENSORBOARD_INLINE_ENV: "0"}
    # stdout.txt: the notebook's lines as they come, where the batch reads each epoch (lab.system.progress).
    command = [sys.executable, "-m", "papermill", str(spec.notebook), str(output), "-k", kernel,
               "-f", str(params), "--no-progress-bar", "--cwd", str(spec.notebook.parent.resolve()),
               "--stdout-file", str(attempt / "stdout.txt")]
    shown = job if job.seed is None else \
        dataclasses.replace(job, label=f"{job.label} seed {', '.join(str(j.seed) for j in jobs)}")
    progress.started(shown)
    started = time.perf_counter()
    with open(attempt / "papermill.log", "wb") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=_die_with_parent)
        children.add(child)
        try:
            returncode = wait_reporting_epochs(child, timeout, attempt / "stdout.txt", lambda done, total: write_line(
                f"[epoch] {shown.label}: epoch {done} of {total}"))
            if returncode is None:  # ran past the timeout
                _terminate(child)
                returncode = -1
        finally:
            children.discard(child)
    seconds = time.perf_counter() - started
    if returncode < 0 and returncode != -1:
        raise KeyboardInterrupt(f"notebook {job.label} was stopped by signal {-returncode}")
    entries = read_index(attempt / "reports")
    seeds = _run_seeds(attempt, entries)
    job_of_seed, mine = {j.seed: j.key for j in jobs}, {j.key: [] for j in jobs}
    for entry in entries:  # each run goes to the job of its seed (a run of another seed, to the first job)
        mine[job_of_seed.get(seeds[entry["run_id"]], job.key)].append(entry)
    seed_part = "" if job.seed is None else "-seed-" + "-".join(str(j.seed) for j in jobs)
    notebook = f"notebooks/{_safe(job.label)}{seed_part}.ipynb"
    outcomes = []
    with commits.lock:
        for each in jobs:
            status, error = _job_status(returncode, attempt, mine[each.key], timeout)
            if returncode == 0 and entries and not mine[each.key]:  # the others' runs were recorded, not this seed's
                status, error = "failed", (f"the notebook recorded no run with seed {each.seed} (its runs' seeds: "
                                           f"{sorted(set(seeds.values()), key=str)}); does it loop over 'seeds'?")
            outcomes.append((status, error))
            record = {"key": each.key, "parameters": each.parameters, "seconds": round(seconds, 2),
                      "attempt": attempt.name, "error": error, "notebook": notebook, "finished": collection.now(),
                      "tries": commits.tries(each.key) + 1}
            # One member per run the notebook recorded (a failed job's runs say failed, as its summary
            # rows do), or the job alone when it trained nothing.
            commits.commit(each.key, [
                {"run_id": e["run_id"], "name": e.get("name", each.label), "status": "failed" if status == "failed"
                 else e.get("status", "unknown"), "config_hash": e.get("config_hash"), "seed": seeds[e["run_id"]],
                 "configuration": each.label, "job": each.label, **record} for e in mine[each.key]] or [
                {"run_id": None, "name": each.label, "status": status, "seed": each.seed, "configuration": each.label,
                 "job": each.label, **record}])  # the commit (a kill between two: see _recover)
        _apply(folder, runs_root, {**record, "run_ids": [e["run_id"] for e in entries]})
    status = worst_status(o[0] for o in outcomes)
    progress.finished(shown, status, seconds, next((o[1] for o in outcomes if o[1]), None), len(jobs))


def _job_status(returncode: int, attempt: Path, entries: list[dict[str, Any]], timeout: float | None
                ) -> tuple[str, str | None]:
    """A job's status and error from its notebook's exit code and the runs it recorded."""
    run_ids, statuses = [e["run_id"] for e in entries], [e.get("status", "unknown") for e in entries]
    if returncode != 0:
        return "failed", _error_from_log(attempt / "papermill.log", timeout if returncode == -1 else None)
    status = worst_status(statuses)
    return status, _failed_runs_error(attempt, run_ids, statuses) if status == "failed" else None


def _run_seeds(attempt: Path, entries: list[dict[str, Any]]) -> dict[str, int | None]:
    """The seed of each run an attempt recorded (its configuration's), by run id."""
    seeds = {}
    for entry in entries:
        path = attempt / "reports" / "runs" / entry["run_id"] / "config.json"
        seeds[entry["run_id"]] = json.loads(path.read_text(encoding="utf-8")).get("seed") if path.exists() else None
    return seeds


def _failed_runs_error(attempt: Path, run_ids: list[str], statuses: list[str]) -> str:
    """Names the training runs that failed in a notebook that itself finished, with their errors."""
    failed = []
    for run_id, status in zip(run_ids, statuses):
        if status == "failed":
            path = attempt / "reports" / "runs" / run_id / "metrics.json"
            # The index names the run; its metrics hold the error. A missing file must not stop the
            # batch (this runs before the commit), so then the run id alone is reported.
            metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
            failed.append(f"{metrics.get('name', run_id)!r} ({metrics.get('error') or 'no error recorded'})")
    return f"training run(s) failed in the notebook: {'; '.join(failed)}"


def _apply(folder: Path, runs_root: Path, record: dict[str, Any]) -> None:
    """Moves a committed attempt's runs and notebook into place; safe to repeat."""
    attempt = folder / ".attempts" / record["attempt"]
    if not attempt.exists():
        return
    indexed = {e["run_id"] for e in read_index(runs_root.parent)}
    attempt_runs = attempt / "reports" / "runs"
    by_id = {e["run_id"]: e for e in read_index(attempt / "reports")}
    for run_id in record["run_ids"]:
        source, target = attempt_runs / run_id, runs_root / run_id
        if source.exists() and not target.exists():
            os.replace(source, target)
        if run_id not in indexed and target.exists():
            atomic.append_line(runs_root / INDEX_NAME, json.dumps(by_id[run_id], sort_keys=True))
    executed = attempt / "executed.ipynb"
    if executed.exists():
        os.replace(executed, folder / record["notebook"])
    shutil.rmtree(attempt, ignore_errors=True)


def _recover(folder: Path, runs_root: Path) -> None:
    """Finishes committed attempts and deletes the folders of attempts that were killed."""
    attempts = folder / ".attempts"
    if not attempts.exists():
        return
    committed: dict[str, dict[str, Any]] = {}
    for job in committed_jobs(folder).values():  # the seeds of one configuration share an attempt
        held = committed.setdefault(job["attempt"], {**job, "run_ids": []})
        held["run_ids"] += job["run_ids"]
    for attempt in sorted(attempts.iterdir()):
        if attempt.name in committed:
            _apply(folder, runs_root, committed[attempt.name])
        else:
            shutil.rmtree(attempt, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child: ask Linux to kill it when the batch process dies, so no orphan runs on."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: children end with their kernel when the batch is stopped normally


def _terminate(child: subprocess.Popen) -> None:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()


def _error_from_log(log: Path, timeout: float | None) -> str:
    if timeout is not None:
        return f"the notebook ran longer than {timeout:.0f} s and was stopped"
    text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    lines = [l for l in text if l.strip() and not l.startswith(("Input Notebook", "Output Notebook", "Executing"))]
    return "\n".join(lines[-6:]) or "papermill failed without output"


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "-" for c in label)[:80]


# -- summary ----------------------------------------------------------------------------------

def summarise(spec: BatchSpec, folder: Path, runs_root: Path | None = None, commits: _Commits | None = None
              ) -> BatchResult:
    """Writes ``summary.csv``, ``summary.md`` (then the comparisons, ``lab.runs.comparison.write_comparison``),
    ``curves.png``, the finished collection record and the TensorBoard HParams experiment
    (``tensorboard/``: the varied parameters and the metrics) from the committed jobs (``commits``:
    the running batch's record; default: the folder's record as it is)."""
    runs_root = runs_root or paths.runs_dir()
    committed = committed_jobs(folder)
    records = [committed[j.key] for j in spec.jobs if j.key in committed]
    loaded = {record["key"]: [load_run(runs_root / rid) for rid in record["run_ids"] if (runs_root / rid).exists()]
              for record in records}
    present = {key for runs in loaded.values() for run in runs for key in run.metrics}
    metrics = [c for c in summary_columns(run for runs in loaded.values() for run in runs) if c in present]
    rows, histories = [], {}
    for record in records:
        runs = loaded[record["key"]]
        if not runs:  # a notebook that failed before training: one row saying so
            rows.append({"name": record["name"], **{k: record["parameters"].get(k) for k in spec.varied},
                         "status": record["status"], "error": _error_tail(record.get("error"))})
            continue
        # Only the columns these runs have: a run that failed mid-training has no test metrics, and
        # results_table refuses a column that none of the runs it is given has.
        table = results_table(runs, [c for c in metrics if c != "status" and any(c in run.metrics for run in runs)]
                              + ["status"])
        for run, row in zip(runs, table.to_dict("records")):
            label = record["name"] if len(runs) == 1 else f"{record['name']}/{run.name}"
            if record["status"] == "failed":
                # The run records only know how training ended; a notebook that raised afterwards
                # (or one with another run that failed) is a failed job, and its rows say so.
                row = {**row, "status": "failed", "error": _error_tail(record.get("error"))}
            rows.append({"name": label, **{k: record["parameters"].get(k) for k in spec.varied}, **row})
            histories[label + (f" (seed {run.config.get('seed')})" if "seed" in spec.varied else "")] = run.history()
    table = pd.DataFrame(rows)
    # A parameter that only repeats the run's name adds nothing.
    for column in spec.varied:
        if column in table and table[column].astype(str).equals(table["name"].astype(str)):
            table = table.drop(columns=column)
    if not table.empty:
        # "status" is named here, not only through the metrics: when no job trained anything there
        # are no metrics, and the failed rows must still say they failed.
        ordered = ["name", *spec.varied, "status", *(m for m in metrics if m != "status"), "error"]
        table = table[[c for c in ordered if c in table.columns]]
    with atomic.atomic_path(folder / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    every_run = [run for record in records for run in loaded[record["key"]]]
    compared = write_comparison(folder, every_run, spec.baseline)
    atomic.write_text(folder / "summary.md", (to_markdown(table, runs=every_run) if not table.empty else "(no runs)")
                      + "\n" + compared)
    if histories:
        plots.save(plots.compare_curves(histories), folder / "curves.png")
    # A notebook parameter that is not a configuration field (say a notebook's own switch) is
    # shown from the job's parameters; configuration fields from what each run recorded.
    done = collection.now()
    written = commits.write(finished=done) if commits else collection.rewrite(load_collection(folder), finished=done)
    tensorboard.write_hparams(load_collection(written))
    return BatchResult(spec.name, folder, records, table)


def _error_tail(error: str | None, width: int = 120) -> str:
    """The last line of an error (papermill's ends with the exception), cut to fit a table cell."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    return last if len(last) <= width else "..." + last[-(width - 3):]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", help="batch spec (JSON or YAML)")
    parser.add_argument("--workers", type=int, help="notebooks executed at once (default: the spec's)")
    parser.add_argument("--kernel", help="Jupyter kernel name (default: the spec's, else lab, else python3)")
    parser.add_argument("--retry-failed", action="store_true", help="run failed parameter sets again")
    parser.add_argument("--fresh", action="store_true", help="forget this batch's earlier records and rerun all")
    parser.add_argument("--timeout", type=float, help="seconds allowed per notebook")
    args = parser.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    try:
        kernel = resolve_kernel(args.kernel or spec.kernel)
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    result = run_batch(spec, workers=args.workers, kernel=kernel, retry_failed=args.retry_failed,
                       fresh=args.fresh, timeout=args.timeout)
    print()
    print((result.folder / "summary.md").read_text())
    counts = pd.Series([r["status"] for r in result.records]).value_counts().to_dict()
    print(f"{len(result.records)} runs {counts}; summary, curves and notebooks in {result.folder} "
          f"({time.perf_counter() - started:.0f} s)")
    # A stalled or diverged run is a result (the summary says so); a failed one is not, and a script or CI
    # job running the batch must be able to tell from the exit code.
    failed = [r["name"] for r in result.records if r["status"] == "failed"]
    if failed:
        print(f"{len(failed)} of {len(result.records)} jobs failed ({', '.join(failed)}): see the error column "
              f"above and the executed notebooks in {result.folder / 'notebooks'}. Once fixed, run only them "
              f"again with: python -m lab.studies.batch {args.spec} --retry-failed")
        return 1
    return 0 if result.records else 1


if __name__ == "__main__":
    sys.exit(main())
