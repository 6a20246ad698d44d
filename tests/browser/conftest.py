"""Browser tests: Debian's chromium driven by Playwright (never a downloaded browser) against the live server.

`.ci/browser` installs chromium when it is missing (make test and .ci/run call it). Each page a test visits is
saved as a screenshot under test-artifacts/screenshots/<backend>/ (git-ignored).
"""
import os
import re

import pytest

from tests.conftest import BACKEND, STAFF_PASSWORD, set_staff_password

CHROMIUM = os.environ.get("PATRON_TEST_CHROMIUM", "/usr/bin/chromium")
# headless, no sandbox (CI containers run as root), nothing fetched in the background
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "test-artifacts", "screenshots", BACKEND)
# generous: a loaded 2-core machine runs two suites and a browser at once; conditions are awaited, never slept on
TIMEOUT_MS = 30_000


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: run .ci/browser (make test does) to install Debian's chromium")
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=TIMEOUT_MS)
    pw = sync_playwright().start()
    # launch() gives every run a fresh temporary profile (user-data dir), removed on close
    b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def new_page(browser):
    """Pages in fresh browser contexts (separate cookie jars): ``new_page()`` for each person in a test."""
    contexts = []

    def make(width=1366, height=900):
        ctx = browser.new_context(viewport={"width": width, "height": height}, locale="zh-CN",
                                  timezone_id="Asia/Shanghai")
        ctx.set_default_timeout(TIMEOUT_MS)
        contexts.append(ctx)
        return ctx.new_page()

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture()
def chat_demo(app, monkeypatch):
    """The customer chat page may start chats (as in `make run`)."""
    monkeypatch.setitem(app.config, "CHAT_DEMO_START", True)


def shot(page, name):
    """Save a screenshot of the page as a test artifact."""
    os.makedirs(SHOTS, exist_ok=True)
    page.screenshot(path=os.path.join(SHOTS, re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png"), full_page=True)


def web_sign_in(page, server, staff_no, next_path="/web/", password=STAFF_PASSWORD, set_password=True):
    """Sign in through the sign-in page; returns once the target page is shown."""
    from playwright.sync_api import expect
    if set_password:
        set_staff_password(staff_no, password)
    page.goto(f"{server}/web/login?next={next_path}")
    page.get_by_label("工号").fill(staff_no)
    page.get_by_label("密码", exact=True).fill(password)
    shot(page, "login")
    page.get_by_role("button", name="登录").click()
    expect(page).to_have_url(re.compile(re.escape(server + next_path) + r"(\?.*)?$"))
