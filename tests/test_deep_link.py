"""A deep link as the first request to a fresh server lands in the app's own navigation.

Streamlit treats a `pages/` folder next to the main script as an automatic multipage app
until the script calls st.navigation. The first request to a fresh server (no session has
run app.py yet) for `/compare` must still run app.py: its navigation (the section headings,
"Noise geometry") and the sidebar's "Engine:" line, with the Compare page drawn.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, ROOT, _free_port, _missing, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def fresh_server(tmp_path: Path):
    """A new `streamlit run app.py` that no browser has talked to yet."""
    port = _free_port()
    env = dict(os.environ, COVNOISE_STORE=str(tmp_path / "runs.sqlite"), COVNOISE_WORKERS="1")
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    cmd += ["--server.address", "127.0.0.1", "--server.headless", "true"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("streamlit did not start:\n" + (tmp_path / "streamlit.log").read_text())
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_a_deep_link_first_lands_in_the_apps_navigation(fresh_server):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is missing: pip install -r requirements-dev.txt")
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{fresh_server}/compare")  # the very first request to this server
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.get_by_text("Engine:").wait_for()
            nav = page.locator('[data-testid="stSidebarNav"]')
            nav.get_by_text("Noise geometry").wait_for()
            text = nav.inner_text()
            shot(page, "deep-link-compare")
            # the app's titles and sections, not the file names of pages/
            assert "Training runs" in text and "Theory" in text, text
            assert "noise_vs_generalisation" not in text and "Noise vs generalisation" in text
            assert page.url.endswith("/compare")
            page.get_by_role("heading", name="Compare").first.wait_for()
        finally:
            browser.close()
