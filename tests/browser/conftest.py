"""Headless Chromium (Debian's ``chromium``) driven by Playwright, against a real collector.

Playwright's own browser downloads are never used (no ``playwright install``): the tests
launch the system's /usr/bin/chromium. Without it (or without the playwright package)
every test here is skipped, saying how to install it.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Iterator

import pytest

CHROMIUM = os.environ.get("JOURNY_CHROMIUM", "/usr/bin/chromium")
INSTALL_HINT = (
    "the browser tests need Debian's chromium at /usr/bin/chromium: run `make browser-deps` "
    "(as root it runs `apt-get install -y chromium`), and the playwright package from the "
    "dev extra (`make test` installs it)"
)
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

try:
    import aiohttp  # noqa: F401
except ImportError:
    collect_ignore_glob = ["test_*.py"]


# Per module, not per session: Playwright's sync API keeps an asyncio loop running in the
# main thread while it is open, and later tests (asyncio.run) must not find one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if sync_playwright is None or not os.access(CHROMIUM, os.X_OK):
        pytest.skip(INSTALL_HINT)
    with (
        tempfile.TemporaryDirectory(prefix="journy-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        # A persistent context on a fresh directory: the profile is ours and empty.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=LAUNCH_FLAGS,
            viewport={"width": 1400, "height": 850},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    page = browser.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    dialogs: list[str] = []

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.journy_errors = errors
    page.journy_dialogs = dialogs
    try:
        yield page
    finally:
        page.close()
    assert not errors, f"the page raised: {errors}"
    assert not dialogs, f"the page opened dialogs: {dialogs}"
