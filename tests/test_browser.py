"""The app in a real browser: Playwright drives the system's Chromium against `streamlit run`.

Opens the app, launches a run from Train, watches its Live chart gain points, opens Compare
Noise vs generalisation and Findings, and finds no error on any page. Screenshots go to artifacts/.
Without Chromium (or the playwright package) the tests skip and say how to get them; with
the CI environment variable set they fail instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from covnoise.config import RunConfig
from covnoise.runs import RunStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
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
# the run launched from the Train page (epochs: digits has 1347 training examples; the form's
# validation fraction 0.1 holds out 135, leaving 1212, so 12 epochs at L = 128 are
# round(12 · 1212 / 128) = 114 steps of the continuous stream)
TRAIN_QUERY = (
    "width=16&depth=2&batch_size=128&small_batch=16&noises=full&noise_scales=1"
    "&baseline=false&epochs=12.0&eval_every=1&sharpness_every=5&probe_size=32&seeds=1"
)
LAUNCHED = RunConfig(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    batch_size=128,
    small_batch=16,
    noise="full",
    noise_scale=1.0,
    lr=0.5,
    epochs=12.0,
    eval_every=1,
    sharpness_every=5,  # curvature and noise statistics (Tr(HΣ) draws) at every 5th evaluation
    probe_size=32,
    seed=0,
)
BUSY_SELECTOR = '[data-testid="stStatusWidget"], [data-testid="stSkeleton"]'
ERROR_SELECTOR = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing: pip install -r requirements-dev.txt")
    if not Path(CHROMIUM).exists():
        _missing(
            f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(the tests never download a browser)"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    port = _free_port()
    env = dict(os.environ, COVNOISE_STORE=str(tmp / "runs.sqlite"), COVNOISE_WORKERS="1")
    log = open(tmp / "streamlit.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            pytest.fail("streamlit did not start:\n" + (tmp / "streamlit.log").read_text()[-2000:])
        time.sleep(0.3)
    yield {"url": url, "store": tmp / "runs.sqlite"}
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def settle(page, quiet: float = 1.0, timeout: float = 60.0) -> None:
    """Wait until the app has drawn (the sidebar names the engine) and no script run is in
    progress for `quiet` seconds."""
    page.locator('[data-testid="stSidebar"]').get_by_text("Engine:").wait_for(
        timeout=timeout * 1000
    )
    deadline = time.monotonic() + timeout
    calm_since = None
    while time.monotonic() < deadline:
        running = page.locator(BUSY_SELECTOR).count() > 0
        if running:
            calm_since = None
        elif calm_since is None:
            calm_since = time.monotonic()
        elif time.monotonic() - calm_since >= quiet:
            return
        time.sleep(0.1)
    raise AssertionError("the app did not finish drawing")


def wait_for_text(page, text: str, present: bool = True, timeout: float = 60.0) -> None:
    """Wait until the page's text contains `text` (or, with present=False, no longer does);
    a timeout fails the test."""
    page.wait_for_function(
        "([t, present]) => document.body.innerText.includes(t) === present",
        arg=[text, present],
        timeout=timeout * 1000,
    )


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"), full_page=True)


def assert_no_error(page, where: str) -> None:
    errors = page.locator(ERROR_SELECTOR)
    assert errors.count() == 0, f"{where}: {errors.first.inner_text()}"
    assert "Traceback" not in page.inner_text("body"), where


def points_in_chart(page, suffix: str) -> int:
    """Points of the first trace whose name ends with `suffix` in the page's first Plotly chart."""
    return page.evaluate(
        """(suffix) => {
            const gd = document.querySelector('.js-plotly-plot');
            if (!gd || !gd._fullData) return 0;  // _fullData: decoded typed arrays
            const t = gd._fullData.find(t => (t.name || '').endsWith(suffix));
            return t && t.x ? t.x.length : 0;
        }""",
        suffix,
    )


def test_launch_watch_compare_in_a_browser(browser, server):
    url = server["url"]
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page.set_default_timeout(60_000)

    page.goto(url)
    settle(page)
    assert_no_error(page, "home")
    assert "Engine:" in page.inner_text('[data-testid="stSidebar"]')
    shot(page, "home")

    page.goto(f"{url}/train?{TRAIN_QUERY}")
    page.get_by_text("estimated time").wait_for()
    settle(page)
    assert_no_error(page, "train")
    sidebar = page.inner_text('[data-testid="stSidebar"]')
    assert "Engine:" in sidebar and "Device:" in sidebar
    shot(page, "train")
    page.get_by_role("button", name="Launch one run").click()
    page.get_by_text("Queued 1 run(s)").wait_for()
    store = RunStore(server["store"])
    rid = LAUNCHED.run_id()
    assert store.status(rid) in ("queued", "running", "finished")

    page.goto(f"{url}/live")
    page.wait_for_selector(".js-plotly-plot", timeout=120_000)
    assert_no_error(page, "live")
    # the chart must gain points while the run goes (114 steps, an evaluation at each);
    # keep watching after the run ends, the page may not have redrawn yet
    seen = [points_in_chart(page, "· train loss")]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and seen[-1] <= seen[0]:
        time.sleep(0.5)
        seen.append(points_in_chart(page, "· train loss"))
    assert seen[0] < seen[-1], f"the chart did not grow: {seen}"
    shot(page, "live-running")
    deadline = time.monotonic() + 300
    while store.status(rid) != "finished" and time.monotonic() < deadline:
        time.sleep(1.0)
    assert store.status(rid) == "finished"
    steps = store.metrics([rid])
    n_evals = steps[steps.name == "train_loss"].shape[0]
    assert n_evals == 115  # step 0 and every step of 114
    deadline = time.monotonic() + 30
    while points_in_chart(page, "· train loss") != n_evals and time.monotonic() < deadline:
        time.sleep(0.5)
    assert points_in_chart(page, "· train loss") == n_evals
    settle(page)
    assert_no_error(page, "live")
    shot(page, "live-finished")
    store.close()

    for path, name in (
        ("compare", "compare"),
        ("noise_vs_generalisation", "noise"),
        ("findings", "findings"),
        ("quadratic", "quadratic"),
        ("geometry", "geometry"),
    ):
        page.goto(f"{url}/{path}")
        page.wait_for_selector(".js-plotly-plot", timeout=60_000)
        settle(page)
        assert_no_error(page, name)
        assert "Engine:" in page.inner_text('[data-testid="stSidebar"]')
        shot(page, name)
    page.close()


def _overlaps(boxes: list[dict]) -> list[tuple[str, str]]:
    """Pairs of text boxes (x, y, width, height, text) that intersect."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if (
                a["x"] < b["x"] + b["width"]
                and b["x"] < a["x"] + a["width"]
                and a["y"] < b["y"] + b["height"]
                and b["y"] < a["y"] + a["height"]
            ):
                out.append((a["text"], b["text"]))
    return out


def test_projector_width_typed_ranges_and_one_setting_in_a_browser(browser, server):
    """At a projector's 1024 px: a value typed outside a field's range reaches the form (no
    silent clamp), is named with its range and turns Launch off; Live's six panel titles do
    not overlap; Compare opens on one setting; Findings shows claim 4's design figure."""
    url = server["url"]
    with RunStore(server["store"]) as store:  # finished runs for Live to draw
        store.import_parquet(ROOT / "tests" / "data" / "demo-digits.parquet")
    page = browser.new_page(viewport={"width": 1024, "height": 900})
    page.set_default_timeout(60_000)

    page.goto(f"{url}/train")
    settle(page)
    seeds = page.get_by_label("seeds", exact=True)
    seeds.fill("50")
    seeds.press("Enter")
    # the rerun the value starts may not have begun when settle() first looks (a loaded
    # machine): wait for the page to say what it must, then for it to finish drawing
    wait_for_text(page, "seeds: 50 is outside the allowed range: 1 to 20")
    settle(page)
    body = page.inner_text("body")
    assert "seeds: 50 is outside the allowed range: 1 to 20" in body
    assert "Launch is off until this is fixed" in body
    launch = page.get_by_role("button", name="Launch", exact=True)
    assert launch.is_disabled()
    shot(page, "train-out-of-range-1024")
    seeds.fill("2")
    seeds.press("Enter")
    wait_for_text(page, "Launch is off", present=False)
    settle(page)
    assert "Launch is off" not in page.inner_text("body")
    assert page.get_by_role("button", name="Launch the whole grid").first.is_enabled()

    page.goto(f"{url}/live")
    settle(page)
    page.wait_for_selector(".js-plotly-plot", timeout=60_000)
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot .annotation-text')]
            .map(e => { const r = e.getBoundingClientRect();
                        return {x: r.x, y: r.y, width: r.width, height: r.height,
                                text: e.textContent}; })"""
    )
    assert len(boxes) >= 6 and not _overlaps(boxes), _overlaps(boxes)
    assert_no_error(page, "live at 1024 px")
    shot(page, "live-1024")

    page.goto(f"{url}/compare")
    settle(page)
    assert_no_error(page, "compare at 1024 px")
    sidebar = page.inner_text('[data-testid="stSidebar"]')
    assert "setting" in sidebar

    page.goto(f"{url}/findings")
    settle(page, timeout=120)
    assert_no_error(page, "findings")
    assert "Equal trace against equal Frobenius" in page.inner_text("body")
    page.close()


def test_presets_and_run_notes_in_a_browser(browser, server):
    """Home says what each preset shows and how long it takes, and its link opens Train on
    MNIST-1D; Compare's manage box hides a run (the store records it, the sidebar offers the
    hidden runs back)."""
    from covnoise.runs import read_runs_parquet
    from covnoise.ui.formatting import short_id

    url = server["url"]
    runs, _ = read_runs_parquet(ROOT / "tests" / "data" / "demo-digits.parquet")
    with RunStore(server["store"]) as store:
        store.import_parquet(ROOT / "tests" / "data" / "demo-digits.parquet")
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url)
    settle(page)
    body = page.inner_text("body")
    assert body.count("You should see:") == 4 and "Takes about a minute" in body
    page.get_by_role("link", name="Open in Train").first.click()
    page.get_by_text("estimated time").wait_for()
    settle(page)
    assert_no_error(page, "train from a preset")
    assert "dataset=mnist1d" in page.url and "width=256" in page.url
    assert "Launch the whole grid (4 runs)" in page.inner_text("body")  # SB and LB, 2 seeds

    target = str(runs["run_id"].iloc[0])
    page.goto(f"{url}/compare?group=noise&dataset=digits&lr=0.5")  # the demo runs' setting
    settle(page)
    box = page.locator('[data-testid="stExpander"]').filter(has_text="Manage runs")
    box.get_by_text("Manage runs").click()
    box.locator('[data-testid="stMultiSelect"]').click()
    page.keyboard.type(short_id(target))
    # pick the option once the list shows it (Enter before it is filtered selects nothing)
    page.get_by_role("option").filter(has_text=short_id(target)).first.click()
    page.keyboard.press("Escape")
    settle(page)
    shot(page, "compare-manage")
    box.get_by_role("button", name="Hide").click()
    wait_for_text(page, "show hidden runs (1)")  # the rerun the click starts has drawn
    settle(page)
    assert_no_error(page, "compare after hiding")
    with RunStore(server["store"]) as store:
        assert store.notes()[target][1] is True
    assert "show hidden runs (1)" in page.inner_text('[data-testid="stSidebar"]')
    shot(page, "compare-hidden")
    page.close()
