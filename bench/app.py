"""App speed: page-open and control-change times of every page (in-process with AppTest and
in a real browser), with the shipped cached runs, and the cost of one Live update while 8 runs
are going.

    python -m bench.app                       # everything
    python -m bench.app --pages               # page times with AppTest only
    python -m bench.app --browser             # page times in Chromium only
    python -m bench.app --browser --only geo  # in Chromium, the pages whose name has "geo"
    python -m bench.app --live                # Live updates only

Pages (CASES: every page, and Noise geometry at 1,000 and 5,000 samples) are timed on a
fresh temporary store. AppTest: the first render of the app in this process is reported once,
then each page is opened in a new session (the server already warm, as for a second visitor)
`--repeats` times, and after each open one control is changed. Browser: a fresh
`streamlit run app.py` (as tests/test_browser.py starts it) driven by Playwright with the
system's Chromium (/usr/bin/chromium); the first open after the server starts is reported
once, then each page is opened `--repeats` times in a new tab (a new session: the tab loads
the app's and Plotly's JavaScript), one control is changed, and the page is left and opened
again from the sidebar navigation (in-app: the JavaScript already loaded). A browser time runs
from the navigation, click or keystroke until Streamlit's running indicator is gone, every
chart of the page is drawn (Plotly has laid it out) and nothing on the page changed for 1 s
(that second not counted). The table gives the median and the slowest of the repeats.

For Live, 8 runs of a synthetic run function (no training, so the 8 runs
do not compete for the CPU with what is measured) write metric rows through the local engine
at the rate of a fast real run; one update is the incremental read of new rows
(LiveMetrics.update), the figure and its JSON, and it is printed side by side with a full
re-read of every row, with their ratio. Last, the live figure of 8 long runs is built with
traces thinned to 400 points and with every point, side by side (time and payload size).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (
    "pages/home.py",
    "pages/train.py",
    "pages/live.py",
    "pages/compare.py",
    "pages/noise_vs_generalisation.py",
    "pages/findings.py",
    "pages/quadratic.py",
    "pages/geometry.py",
)


@dataclass(frozen=True)
class Case:
    """One row of the page table: a page opened at `query`, and one control change on it.

    `change` is (widget kind, key, label, value): AppTest sets the widget by its key, the
    browser by its label on the page (a number input is typed and entered, a checkbox
    clicked). `figures` is how many Plotly charts the page draws with the shipped cached runs
    and an empty store; the browser waits for all of them.
    """

    name: str
    page: str
    url: str
    query: dict = field(default_factory=dict)
    change: tuple[str, str, str, object] | None = None
    figures: int = 0
    title: str | None = None  # its name in the sidebar navigation (None: the case's name)


CASES = (
    Case("Home", "pages/home.py", ""),
    Case("Train", "pages/train.py", "train", change=("number_input", "train.seeds", "seeds", 2)),
    Case(
        "Live",
        "pages/live.py",
        "live",
        change=("checkbox", "live.log_loss", "log-scale loss", True),
    ),
    Case(
        "Compare",
        "pages/compare.py",
        "compare",
        change=("checkbox", "compare.log_y", "log scale", True),
        figures=1,
    ),
    Case(
        "Noise vs generalisation",
        "pages/noise_vs_generalisation.py",
        "noise_vs_generalisation",
        change=("checkbox", "noise.log_x", "log-scale x", True),
        figures=2,
    ),
    Case("Findings", "pages/findings.py", "findings", figures=6),
    Case(
        "Quadratic",
        "pages/quadratic.py",
        "quadratic",
        change=("number_input", "quadratic.seed", "seed", 1),
        figures=2,
    ),
    Case(
        "Noise geometry (1,000 samples)",
        "pages/geometry.py",
        "geometry",
        change=("number_input", "geometry.seed", "seed", 1),
        figures=4,
        title="Noise geometry",
    ),
    Case(
        "Noise geometry (5,000 samples)",
        "pages/geometry.py",
        "geometry",
        query={"samples": 5000},
        change=("number_input", "geometry.seed", "seed", 1),
        figures=4,
    ),
)
METRIC_NAMES = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "val_loss",
    "val_acc",
    "gen_gap",
    "lr",
    "sharpness",
    "noise_fro",
    "noise_trace",
    "noise_trace_hsigma",
    "grad_norm",
    "dist_init",
)


def synthetic_run(config, emit, should_stop=None, progress=False):
    """A run function for the benchmark: emits a metric event (14 metrics) every 0.1 s for
    `config.steps` steps, as a fast real run would, without training."""
    import math

    steps = config.steps or 600
    emit(
        {
            "event": "start",
            "total_steps": steps,
            "probe_size": config.probe_size,
            "device": "synthetic",
            "versions": {},
            "code_revision": "bench",
        }
    )
    t0 = time.perf_counter()
    for step in range(steps + 1):
        if should_stop is not None and should_stop():
            return {"status": "cancelled", "steps": step}
        values = {
            name: 1.0 + math.exp(-step / 100) + 0.01 * i for i, name in enumerate(METRIC_NAMES)
        }
        values["lr"] = config.lr
        emit(
            {
                "event": "metric",
                "step": step,
                "epoch": step / 10,
                "examples_seen": step * 128,
                "wall_time": time.perf_counter() - t0,
                "metrics": values,
            }
        )
        time.sleep(0.1)
    return {"status": "finished", "steps": steps, "final": values}


def _app_test():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)


def _apptest_change(at, change) -> None:
    kind, key, _, value = change
    widget = getattr(at, kind)(key=key)
    if kind == "checkbox":
        widget.check() if value else widget.uncheck()
    else:
        widget.set_value(value)
    at.run()


def _summary(times: list[float]) -> tuple[float, float] | None:
    return (statistics.median(times), max(times)) if times else None


def bench_pages(repeats: int) -> list[tuple[str, tuple, tuple | None]]:
    """AppTest: each case opened in a new session `repeats` times, then its control changed.

    Returns (case, (median, max) open, (median, max) change or None) rows."""
    import streamlit as st

    t = time.perf_counter()
    _app_test().run()
    cold = time.perf_counter() - t
    print(
        f"AppTest: first render of the app in a fresh process (imports, engine start): {cold:.2f} s"
    )
    rows = []
    for case in CASES:
        opens, changes = [], []
        for _ in range(repeats):
            at = _app_test().run()
            prefix = case.change[1].split(".")[0] if case.change else ""
            for name, value in case.query.items():
                at.session_state[f"{prefix}.{name}"] = value
            t = time.perf_counter()
            at.switch_page(case.page).run()
            opens.append(time.perf_counter() - t)
            if case.change:
                t = time.perf_counter()
                _apptest_change(at, case.change)
                changes.append(time.perf_counter() - t)
            if at.exception:
                print(f"  {case.name}: exception {at.exception[0].value}")
        rows.append((case.name, _summary(opens), _summary(changes)))
    st.cache_resource.clear()
    st.cache_data.clear()
    return rows, cold


# ---- the real browser ------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: What the page shows, read in the browser: whether a script run is in progress (Streamlit's
#: status widget or a skeleton), whether the sidebar names the engine (the app has drawn), how
#: many Plotly charts are drawn, and a fingerprint of what is shown (URL, main text, and each
#: chart's traces: type, length, first value; its axis types) that changes when a rerun redraws.
PAGE_STATE_JS = """() => {
    const busy = document.querySelectorAll(
        '[data-testid="stStatusWidget"], [data-testid="stSkeleton"]').length > 0;
    const side = document.querySelector('[data-testid="stSidebar"]');
    const engine = !!side && side.innerText.includes('Engine:');
    const main = document.querySelector('[data-testid="stMain"]');
    let fp = location.href + '\\n' + (main ? main.innerText : '');
    let drawn = 0;
    for (const gd of document.querySelectorAll('.js-plotly-plot')) {
        if (!gd._fullLayout || !gd._fullData || !gd.querySelector('.main-svg')) continue;
        drawn += 1;
        for (const t of gd._fullData) {
            const n = t.x ? t.x.length : 0;
            fp += '|' + t.type + ':' + n + ':' + (t.y && t.y.length ? t.y[0] : '');
        }
        const l = gd._fullLayout;
        fp += '|' + (l.xaxis ? l.xaxis.type : '') + (l.yaxis ? l.yaxis.type : '');
    }
    return {busy, engine, drawn, fp};
}"""


def _wait_drawn(
    page, figures: int, timeout: float, before: str | None = None, quiet: float = 1.0
) -> float:
    """Seconds from now until the page is drawn: the engine named in the sidebar, `figures`
    charts drawn, nothing running, the fingerprint different from `before` (when given), and
    nothing changed for `quiet` s; the time returned is that of the last change seen."""
    t0 = time.perf_counter()
    last_change, last_fp = t0, None
    while time.perf_counter() - t0 < timeout:
        s = page.evaluate(PAGE_STATE_JS)
        now = time.perf_counter()
        if s["busy"] or s["fp"] != last_fp:
            last_change, last_fp = now, s["fp"]
        ready = (
            not s["busy"]
            and s["engine"]
            and s["drawn"] >= figures
            and (before is None or s["fp"] != before)
        )
        if ready and now - last_change >= quiet:
            return last_change - t0
        time.sleep(0.05)
    raise TimeoutError(f"page not drawn after {timeout:.0f} s: {s['drawn']}/{figures} charts")


def _browser_change(page, change) -> None:
    kind, _, label, value = change
    if kind == "checkbox":
        page.get_by_text(label, exact=True).click()
    else:
        box = page.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Enter")


def _navigate(page, title: str, figures: int = 0) -> float:
    """Seconds from a click on `title` in the sidebar navigation until the page is drawn."""
    before = page.evaluate(PAGE_STATE_JS)["fp"]
    link = page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True)
    t = time.perf_counter()
    link.click()
    return time.perf_counter() - t + _wait_drawn(page, figures, 180, before)


def _report_errors(page, name: str) -> None:
    errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    if errors.count():
        print(f"  {name}: error {errors.first.inner_text()[:200]}")


def _browser_case(page, url: str, case: Case, opens: list, changes: list, navs: list) -> None:
    """One repeat of a case: open it in `page` (a new tab), change its control, leave and
    come back through the sidebar navigation; the times are appended to the lists."""
    from urllib.parse import urlencode

    query = f"?{urlencode(case.query)}" if case.query else ""
    t = time.perf_counter()
    page.goto(f"{url}/{case.url}{query}")
    opens.append(time.perf_counter() - t + _wait_drawn(page, case.figures, 180))
    if case.change:
        before = page.evaluate(PAGE_STATE_JS)["fp"]
        t = time.perf_counter()
        _browser_change(page, case.change)
        changes.append(time.perf_counter() - t + _wait_drawn(page, case.figures, 180, before))
    if not case.query:  # in-app navigation: away to another page and back
        _navigate(page, "Findings" if case.name == "Home" else "Home")
        navs.append(_navigate(page, case.title or case.name, case.figures))
    _report_errors(page, case.name)


def _start_server(tmp: Path):
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, COVNOISE_STORE=str(tmp / "browser.sqlite"), COVNOISE_WORKERS="1")
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 - closed with the server
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    cmd += ["--browser.gatherUsageStats", "false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, log, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not start: " + (tmp / "streamlit.log").read_text()[-2000:])


def bench_browser(repeats: int, only: str | None = None):
    """The real browser: a fresh `streamlit run app.py` and the system's Chromium (Playwright).

    The first open after the server starts (Home) is reported alone; then each case is opened
    in a new tab (a new session) `repeats` times and its control changed once per open. A time
    runs from the navigation (or the keystroke/click) until nothing is running, every chart of
    the page is drawn and the page stayed unchanged for 1 s (that second is not counted)."""
    from playwright.sync_api import sync_playwright

    cases = [c for c in CASES if only is None or only.lower() in c.name.lower()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        proc, log, url = _start_server(Path(tmp))
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1700})
            t = time.perf_counter()
            page.goto(url)
            cold = time.perf_counter() - t + _wait_drawn(page, 0, 180)
            page.close()
            print(f"browser: first open after the server starts (Home): {cold:.2f} s")
            for case in cases:
                opens, changes, navs = [], [], []
                for _ in range(repeats):
                    page = browser.new_page(viewport={"width": 1400, "height": 1700})
                    try:
                        _browser_case(page, url, case, opens, changes, navs)
                    except Exception as err:  # report the case and go on with the others
                        print(f"  {case.name}: {type(err).__name__}: {str(err)[:300]}")
                    page.close()
                rows.append(
                    (
                        case.name,
                        _summary(opens),
                        _summary(changes),
                        _summary(navs),
                    )
                )
                print(f"  {case.name}: open {opens}, change {changes}, in-app {navs}", flush=True)
        finally:
            browser.close()
            proc.terminate()
            proc.wait(timeout=20)
            log.close()
    return rows, cold


def _table(apptest, browser) -> str:
    """The markdown table of page-open and control-change times (median / slowest, s)."""

    def cell(pair):
        return "—" if pair is None else f"{pair[0]:.2f} / {pair[1]:.2f}"

    a = {row[0]: row[1:] for row in apptest or []}
    b = {row[0]: row[1:] for row in browser or []}
    changes = {c.name: c.change for c in CASES}
    lines = [
        "| page | control changed | AppTest open | AppTest change | browser open (new tab) "
        "| browser open (in-app) | browser change |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in dict.fromkeys([*a, *b]):
        ch = changes.get(name)
        what = "—" if ch is None else f"{ch[2]} → {ch[3]}"
        ao, ac = a.get(name, (None, None))
        bo, bc, bn = b.get(name, (None, None, None))
        lines.append(
            f"| {name} | {what} | {cell(ao)} | {cell(ac)} | {cell(bo)} | {cell(bn)} | {cell(bc)} |"
        )
    return "\n".join(lines)


def bench_live(rounds: int) -> None:
    from covnoise import results, viz
    from covnoise.config import RunConfig
    from covnoise.runs.engine import make_engine
    from covnoise.ui import formatting, livemetrics

    store_path = os.environ["COVNOISE_STORE"]
    engine = make_engine("local", store_path, workers=8, run_fn="bench.app:synthetic_run")
    try:
        configs = [
            RunConfig(dataset="digits", steps=100_000, epochs=None, seed=s, lr=0.1)
            for s in range(8)
        ]
        ids = engine.submit_many(configs)
        store = engine.store
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # until every run has written some history
            counts = store.metrics(ids).groupby("run_id").size()
            if len(counts) == 8 and counts.min() >= 50 * len(METRIC_NAMES):
                break
            time.sleep(0.5)
        runs = store.runs(run_ids=ids)
        labels = formatting.run_labels(runs).to_dict()
        live = livemetrics.LiveMetrics()
        live.update(store, ids)
        inc, full, fig_t, rows = [], [], [], []
        for _ in range(rounds):
            time.sleep(0.5)
            t = time.perf_counter()
            frame = live.update(store, ids)
            t_read = time.perf_counter() - t
            t = time.perf_counter()
            reread = store.metrics(ids)
            full.append(time.perf_counter() - t)
            t = time.perf_counter()
            viz.live_figure(frame, labels, x="step", x_label=results.X_AXES["step"]).to_json()
            fig_t.append(time.perf_counter() - t)
            inc.append(t_read)
            rows.append(len(frame))
            assert len(reread) >= len(frame) - 200  # the same rows (more may have arrived)
        running = int((store.runs(run_ids=ids)["status"] == "running").sum())
        ms = 1000.0
        print(
            f"Live update with {running} runs going ({rows[0]}–{rows[-1]} metric rows, "
            f"{rounds} updates, 0.5 s apart):"
        )
        print(f"  read new rows (metrics_since)  median {statistics.median(inc) * ms:7.1f} ms")
        print(
            f"  re-read all rows (metrics)     median {statistics.median(full) * ms:7.1f} ms"
            f"   ratio full/incremental {statistics.median(full) / statistics.median(inc):.1f}×"
        )
        print(f"  six-panel figure + JSON        median {statistics.median(fig_t) * ms:7.1f} ms")
        total = [a + b for a, b in zip(inc, fig_t, strict=True)]
        print(
            f"  one update (read + figure)     median {statistics.median(total) * ms:7.1f} ms,"
            f" max {max(total) * ms:.1f} ms"
        )
    finally:
        engine.close(cancel_running=True)
        engine.store.close()


def bench_thinning(evaluations: int = 3000, repeats: int = 3) -> None:
    """The live figure of 8 long runs, thinned to 400 points per trace vs every point: the
    time to build it here and the size of what the browser must draw."""
    import numpy as np
    import pandas as pd

    from covnoise import viz

    steps = np.arange(evaluations)
    frames = [
        pd.DataFrame(
            {
                "run_id": f"r{r}",
                "step": steps,
                "name": name,
                "value": 1.0 + np.exp(-steps / 500.0) + 0.01 * i,
            }
        )
        for r in range(8)
        for i, name in enumerate(METRIC_NAMES)
    ]
    metrics = pd.concat(frames, ignore_index=True)
    labels = {f"r{r}": f"run {r}" for r in range(8)}

    def timed(max_points):
        best, size = float("inf"), 0
        for _ in range(repeats):
            t = time.perf_counter()
            size = len(viz.live_figure(metrics, labels, max_points=max_points).to_json())
            best = min(best, time.perf_counter() - t)
        return best, size

    (thin, thin_size), (every, every_size) = timed(400), timed(None)
    print(
        f"Live figure of 8 runs × {evaluations} evaluations (best of {repeats}), ≤ 400 points "
        f"per trace vs every point:\n  build + JSON {thin * 1000:.0f} ms vs {every * 1000:.0f} ms"
        f" (ratio {every / thin:.1f}×); payload sent to the browser {thin_size / 1e6:.2f} MB vs "
        f"{every_size / 1e6:.2f} MB (ratio {every_size / thin_size:.1f}×)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.app",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pages", action="store_true", help="page times with AppTest only")
    parser.add_argument("--browser", action="store_true", help="page times in Chromium only")
    parser.add_argument("--live", action="store_true", help="Live updates only")
    parser.add_argument("--only", help="browser: only the pages whose name contains this")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    every = not (args.pages or args.browser or args.live)
    apptest = browser = None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COVNOISE_STORE"] = str(Path(tmp) / "runs.sqlite")
        if args.pages or every:
            apptest, cold = bench_pages(args.repeats)
            print(_table(apptest, None), flush=True)
        if args.browser or every:
            browser, bcold = bench_browser(args.repeats, args.only)
        if apptest or browser:
            print(f"\nPage open and one control change, median / slowest of {args.repeats} (s):\n")
            print(_table(apptest, browser))
        if args.live or every:
            bench_live(args.rounds)
            bench_thinning()
    return 0


if __name__ == "__main__":
    sys.exit(main())
