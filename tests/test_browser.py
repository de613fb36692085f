"""The real-browser check: JupyterLab + Debian's Chromium, driven by Playwright.

Starts JupyterLab headless on a free port, opens notebook 03 in Chromium, runs its cells one by
one (Shift+Enter, as a learner would) until the live cost calculator has rendered, moves the
monthly-requests slider with the keyboard and checks that the calculator's result changes.
Screenshots and the JupyterLab log go to ``test-artifacts/`` (gitignored).

Why cell by cell and not "Run All Cells": notebook 03 may go on to start the local server and
train a model, which is covered by the notebook runs (``make course``) and would only make this
test slow; the browser check is about the widget working in a real browser.

Skipped when Chromium (``/usr/bin/chromium``, Debian package ``chromium``) or the Playwright
Python package is missing -- unless ``FTKIT_REQUIRE_BROWSER=1`` (CI), where that is a failure.
Playwright never downloads a browser here (no ``playwright install``): it launches Debian's
Chromium by path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
# FTKIT_BROWSER_NOTEBOOK points the check at another notebook with the same two DOM classes.
NOTEBOOK = Path(
    os.environ.get("FTKIT_BROWSER_NOTEBOOK") or REPO / "notebooks" / "03_cost_math.ipynb"
)
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("FTKIT_CHROMIUM", "/usr/bin/chromium"))
REQUIRED = os.environ.get("FTKIT_REQUIRE_BROWSER", "") == "1"

# DOM classes the calculator's widgets carry (ipywidgets ``add_class``).
SLIDER_CLASS = "ftkit-calc-requests"
RESULT_CLASS = "ftkit-calc-result"

# As root, with this machine's closed network: no sandbox, no GPU, no background connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-dev-shm-usage",
]

# JupyterLab user settings for a quiet, deterministic session: no news/update toasts, no
# autosave (the notebook is a scratch copy anyway), every cell attached to the DOM.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

SERVER_START_TIMEOUT = 90  # s until JupyterLab answers its REST API
KERNEL_TIMEOUT = 90_000  # ms until the notebook is open and its kernel idle
CELL_TIMEOUT = 150_000  # ms for one cell to finish (quick mode keeps them short)
RENDER_TIMEOUT = 30_000  # ms for a cell's widget outputs to render
UI_TIMEOUT = 30_000  # ms for ordinary UI steps

EXECUTED_PROMPT = re.compile(r"^\s*\[\d+\]:\s*$")
ACTIVE = re.compile(r"\bjp-mod-active\b")


# --- environment ------------------------------------------------------------------------------


def _missing_browser_reason() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (install Debian's package: apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Playwright Python package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture(scope="module")
def browser_ready():
    reason = _missing_browser_reason()
    if reason:
        if REQUIRED:
            pytest.fail(f"FTKIT_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
        pytest.skip(f"browser check skipped: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- JupyterLab -------------------------------------------------------------------------------


class Lab:
    def __init__(self, url: str, token: str, log: Path):
        self.url, self.token, self.log = url, token, log

    def api(self, path: str):
        req = urllib.request.Request(
            f"{self.url}{path}", headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def answers(self) -> bool:
        try:
            self.api("/api/status")
            return True
        except (OSError, ValueError, urllib.error.URLError):
            return False

    def kernel_state(self, notebook: str) -> str:
        """The notebook's kernel as the server sees it: "none", "<state>, <n> connections"."""
        for session in self.api("/api/sessions"):
            if session.get("path", "").endswith(notebook) and session.get("kernel"):
                kernel = self.api(f"/api/kernels/{session['kernel']['id']}")
                return f"{kernel['execution_state']}, {kernel.get('connections', 0)} connections"
        return "none"


@pytest.fixture(scope="module")
def lab(browser_ready, tmp_path_factory):
    """JupyterLab on a free port with a random token, serving a scratch copy of notebook 03.

    The notebook is copied so the committed one never gains outputs or checkpoints; ``data/`` is
    linked beside it so ``ftkit.course.data_path`` and relative paths resolve as in the repo.
    Jupyter's config, data, runtime and lab settings live in the scratch folder too.
    """
    if not NOTEBOOK.exists():
        pytest.fail(f"{NOTEBOOK} does not exist", pytrace=False)
    root = tmp_path_factory.mktemp("lab")
    (root / "notebooks").mkdir()
    shutil.copy2(NOTEBOOK, root / "notebooks" / NOTEBOOK.name)
    if (REPO / "data").is_dir():
        (root / "data").symlink_to(REPO / "data", target_is_directory=True)
    home = root / ".jupyter"
    settings = home / "lab-settings"
    for rel, values in LAB_SETTINGS.items():
        path = settings / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "browser_jupyterlab.log"

    token, port = uuid.uuid4().hex, _free_port()
    env = {
        **os.environ,
        "FTKIT_QUICK": "1",  # quick mode, as in CI
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("JUPYTER_TOKEN", None)
    cmd = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--LabApp.news_url=",
        "--LabApp.extension_manager=readonly",  # no PyPI queries from the extension manager
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers and this machine run as root
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Lab(f"http://127.0.0.1:{port}", token, log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while not server.answers():
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer in {SERVER_START_TIMEOUT}s:\n{_tail(log)}")
            time.sleep(0.25)
        yield server
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM: the server shuts its kernels down; then SIGKILL whatever is left in its session."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # kernels share the server's session
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


# --- the check --------------------------------------------------------------------------------


def test_calculator_slider_changes_result(lab):
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect, sync_playwright

    console: list[str] = []
    failure = None
    step = "launching Chromium"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(UI_TIMEOUT)
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            try:
                step = "opening the notebook in JupyterLab"
                page.goto(
                    f"{lab.url}/lab/tree/notebooks/{NOTEBOOK.name}?token={lab.token}",
                    wait_until="domcontentloaded",
                )
                panel = page.locator(".jp-NotebookPanel").first
                expect(panel.locator(".jp-Cell").first).to_be_visible(timeout=KERNEL_TIMEOUT)

                step = "waiting for the kernel to be idle"
                _wait_for_kernel(page, panel, lab)

                step = "running cells until the calculator renders"
                slider = panel.locator(f".{SLIDER_CLASS}").first
                result = panel.locator(f".{RESULT_CLASS}").first
                ran = _run_until(page, panel, slider)

                step = f"checking the calculator rendered by cell {ran}"
                expect(slider).to_be_visible()
                expect(result).to_be_visible()
                slider.scroll_into_view_if_needed()
                handle = slider.locator(".noUi-handle").first
                expect(handle).to_be_visible()
                before_value = handle.get_attribute("aria-valuenow")
                before_text = _settled_text(page, result)
                assert before_text, f"the {RESULT_CLASS} output is empty before moving the slider"
                page.screenshot(path=str(ARTIFACTS / "browser_calculator_before.png"))

                step = "moving the slider with the keyboard (one step right)"
                handle.focus()
                handle.press("ArrowRight")
                expect(handle).not_to_have_attribute("aria-valuenow", before_value or "")

                step = "waiting for the calculator's result to change"
                page.wait_for_function(
                    "([el, before]) => { const t = el.innerText.trim();"
                    " return t !== '' && t !== before; }",
                    arg=[result.element_handle(), before_text],
                    timeout=UI_TIMEOUT,
                )
                after_value = handle.get_attribute("aria-valuenow")
                after_text = _settled_text(page, result)
                page.screenshot(path=str(ARTIFACTS / "browser_calculator.png"))
            except (AssertionError, PlaywrightError) as exc:
                failure = _failure_report(page, step, exc, console, lab)
        finally:
            browser.close()
    if failure:
        pytest.fail(failure, pytrace=False)

    assert after_text and after_text != before_text
    changed = [
        f"  {a!r} -> {b!r}"
        for a, b in zip(before_text.splitlines(), after_text.splitlines())
        if a != b
    ]
    print(f"\nslider {before_value} -> {after_value}; result lines changed:", *changed, sep="\n")


def _wait_for_kernel(page, panel, lab) -> None:
    """Wait until the notebook's kernel is started, idle and connected to this page.

    The toolbar's idle indicator alone is not enough: it reads "idle" before the kernel exists,
    and running a cell then pops up a kernel-selection dialog. So ask the server too: the
    kernel must be idle with the page's websocket connected.
    """
    from playwright.sync_api import expect

    dialog = page.locator(".jp-Dialog")
    deadline = time.monotonic() + KERNEL_TIMEOUT / 1000
    state = "none"
    while not re.fullmatch(r"idle, [1-9]\d* connections", state):
        if dialog.count():  # e.g. a notebook without kernelspec: take the default kernel
            dialog.locator(".jp-mod-accept").first.click()
        if time.monotonic() > deadline:
            raise AssertionError(f"the kernel is not ready; the server reports: {state}")
        page.wait_for_timeout(250)
        state = lab.kernel_state(NOTEBOOK.name)
    expect(panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_be_attached()
    expect(page.locator(".jp-Dialog")).to_have_count(0)


def _run_until(page, panel, target) -> int:
    """Run the notebook's cells in order with Shift+Enter, each to completion, until ``target``
    is in the page; returns the index of the cell that produced it."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import expect

    cells = panel.locator(".jp-Notebook .jp-Cell")
    sources = ["".join(c["source"]) for c in json.loads(NOTEBOOK.read_text("utf-8"))["cells"]]
    n = len(sources)
    assert n, f"{NOTEBOOK.name} has no cells"
    expect(cells, f"JupyterLab should show all {n} cells").to_have_count(n)
    cells.first.locator(".jp-InputPrompt").first.click()  # select cell 0, command mode
    for i in range(n):
        cell = cells.nth(i)
        try:
            _run_cell(page, cell)
        except (AssertionError, PlaywrightError) as exc:
            first_line = (sources[i].strip().splitlines() or [""])[0][:60]
            raise AssertionError(f"cell {i} ({first_line!r}): {exc}") from None
        if target.count():
            return i
    raise AssertionError(
        f"ran all {n} cells but no element with the DOM class {SLIDER_CLASS!r} appeared"
    )


def _run_cell(page, cell) -> None:
    """Shift+Enter on the active ``cell``; for a code cell, wait until it has finished and its
    widget outputs have rendered. A traceback in its output is an error."""
    from playwright.sync_api import expect

    expect(cell, "this cell should be the active cell").to_have_class(ACTIVE)
    page.keyboard.press("Shift+Enter")
    if "jp-CodeCell" not in (cell.get_attribute("class") or ""):
        return
    prompt = cell.locator(".jp-InputPrompt").first
    expect(prompt, "the cell did not finish running").to_have_text(
        EXECUTED_PROMPT, timeout=CELL_TIMEOUT
    )
    text = cell.locator(".jp-OutputArea-output").all_inner_texts()
    if any("Traceback (most recent call last)" in t for t in text):
        raise AssertionError("the cell raised an error:\n" + "\n".join(text)[-3000:])
    # Widget views render after the cell finishes; until then their output node is empty or
    # says "Loading widget...".
    page.wait_for_function(
        "cell => [...cell.querySelectorAll('.jp-OutputArea-output')]"
        ".every(o => o.children.length > 0)",
        arg=cell.element_handle(),
        timeout=RENDER_TIMEOUT,
    )


def _settled_text(page, locator, quiet_ms: int = 300) -> str:
    """The element's text once it has stopped changing for ``quiet_ms``."""
    text, since = locator.inner_text().strip(), time.monotonic()
    deadline = since + UI_TIMEOUT / 1000
    while time.monotonic() - since < quiet_ms / 1000 and time.monotonic() < deadline:
        page.wait_for_timeout(50)
        now = locator.inner_text().strip()
        if now != text:
            text, since = now, time.monotonic()
    return text


def _failure_report(page, step, exc, console, lab) -> str:
    """What went wrong, with a screenshot of the page at that moment."""
    shot = ARTIFACTS / "browser_failure.png"
    try:
        page.screenshot(path=str(shot))
    except Exception:  # the page may be gone
        shot = "(screenshot failed)"
    return (
        f"browser check failed while {step}:\n{exc}\n\n"
        f"screenshot: {shot}\nJupyterLab log: {lab.log}\n"
        "--- last browser console lines ---\n" + "\n".join(console[-20:])
    )
