"""Render a local HTML file in headless Chromium (Debian's `chromium` package) with Playwright.

Only the system's Chromium is used (Playwright's own browser download is never run). The
flags keep Chromium from reaching for the network at start (closed networks refuse it).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REQUIRE_ENV = "OPENWIT_REQUIRE_CHROMIUM"


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def require() -> str:
    """The Chromium binary; skips the test where there is none, unless CI demands it."""
    import pytest

    path = chromium()
    if path is None:
        message = "headless Chromium is needed: install Debian's `chromium` package (apt-get install chromium)"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return path


@dataclass
class Page:
    images: list[dict]
    figure_ids: list[str]
    errors: list[str] = field(default_factory=list)
    title: str = ""


def render(html_file: Path, screenshot: Path | None = None, width: int = 1280) -> Page:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})  # not-a-column
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:80]}"))
            page.goto(html_file.resolve().as_uri(), wait_until="load")
            images = page.eval_on_selector_all(
                "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, w: e.naturalWidth, h: e.naturalHeight,"
                " figure: e.closest('figure') ? e.closest('figure').id : ''}))")
            ids = page.eval_on_selector_all("figure.plot", "els => els.map(e => e.id)")
            title = page.title()
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return Page(images=images, figure_ids=ids, errors=errors, title=title)
