"""Take docs/inspector.png (not a test; run by hand after changing the inspector's look).

    .venv/bin/python tests/browser/screenshot.py

The demo's events through the SDK into a collector, plus one event that breaks two of
journy.io's rules, shown in headless Chromium (Debian's /usr/bin/chromium).
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

from journy_analytics import Analytics
from journy_analytics._cli.demo import demo_calls as _demo_calls
from journy_analytics.collector import CollectorThread

OUT = Path(__file__).resolve().parents[2] / "docs" / "inspector.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    with CollectorThread() as collector:
        analytics = Analytics(write_key="YOUR_WRITE_KEY", host=collector.url)
        for _, call in _demo_calls(analytics):
            call()
        analytics.track(
            user_id="f4ca124298",
            event="Order Shipped",
            group_id="spacex",
            properties={"carrier": "UPS", "items": [{"sku": "T-1"}, {"sku": "T-2"}]},
        )
        assert analytics.close_and_flush(timeout=10)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1440, "height": 760})
            page.goto(collector.url + "/")
            page.wait_for_selector("#live[data-state=live]")
            page.locator("#events tbody tr").first.click()
            page.wait_for_selector("#detail ul.warnings")
            page.screenshot(path=str(OUT))
            browser.close()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
