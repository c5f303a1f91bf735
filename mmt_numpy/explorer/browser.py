"""Opening the explorer page in a real browser: headless Chromium driven by Selenium.

Used by the browser test (``tests/test_browser.py``) and by ``explore --screenshot``.  It
needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``; ``.ci/run`` installs them) and the PyPI package ``selenium`` (in the
``dev`` extra).  Selenium is pointed at the system driver, so it never tries to download
one.  The flags keep Chromium from reaching for the network (no component updates, no
sync, no QUIC), which on a machine without one would only make it slow; ``--no-sandbox``
is required when running as root, as CI does.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVERS = ("chromedriver",)
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
INSTALL = "apt-get install chromium chromium-driver"


def find_browser() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` paths, or None when either is missing."""
    browser = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    driver = next((path for name in DRIVERS if (path := shutil.which(name))), None)
    return (browser, driver) if browser and driver else None


def browser_problem() -> str | None:
    """Why the page cannot be opened in a browser here (one line), or None."""
    if importlib.util.find_spec("selenium") is None:
        return 'selenium is not installed (it is in the dev extra: pip install -e ".[dev]")'
    if find_browser() is None:
        return f"no Chromium and chromedriver found on PATH (Debian: {INSTALL})"
    return None


@contextmanager
def open_page(path: str | Path, width: int = 1500, height: int = 1050, timeout: float = 30.0) -> Iterator:
    """A Selenium ``WebDriver`` showing the page at ``path``, once its script has run.

    The page sets ``<body data-ready="true">`` at the end of its script; this waits for
    it (up to ``timeout`` seconds).  The browser starts with a fresh profile in a temporary
    folder and is closed on exit.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    problem = browser_problem()
    if problem:
        raise RuntimeError(problem)
    browser, driver_path = find_browser()
    with tempfile.TemporaryDirectory(prefix="mmt-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages, for errors
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        try:
            driver.set_page_load_timeout(timeout)
            driver.get(Path(path).resolve().as_uri())
            WebDriverWait(driver, timeout).until(
                lambda d: (
                    d.execute_script("return document.body.dataset.ready === 'true'")
                    or d.execute_script("return (window.__explorerErrors || []).length > 0")
                )
            )
            yield driver
        finally:
            driver.quit()


def page_errors(driver: object) -> list[str]:
    """Console errors (level SEVERE) and the errors the page's script caught, as strings."""
    logged = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    return logged + list(driver.execute_script("return window.__explorerErrors || []"))


def screenshot(
    html: str | Path, png: str | Path, *, layer: int = 0, head: int = 0, word: int = -1, overlay: bool = True
) -> Path:
    """Open the page, show one state, save a PNG of the whole page; returns the PNG's path.

    The state: the map of ``layer`` (negative counts from the last) and ``head`` enlarged
    in the model view (which also selects them), then, with ``overlay``, all heads overlaid
    (the key ``a``: the head view in every head's colour, the cross-modal view averaged over
    the heads), and the text token ``word`` of the first example focused in the cross-modal
    view (negative: the last real word, ``?`` excluded).

    Raises:
        RuntimeError: no browser, or the page reported errors.
    """
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with open_page(html) as driver:
        driver.execute_script(
            """
            const [layer, head, word, overlay] = arguments;
            const thumbs = document.querySelectorAll('#grid canvas.thumb');
            const layers = document.querySelectorAll('#layers button').length;
            const heads = document.querySelectorAll('#heads button.head').length;
            const l = (layer + layers) % layers;
            thumbs[l * heads + head].click();
            if (overlay) document.dispatchEvent(new KeyboardEvent('keydown', {key: 'a', bubbles: true}));
            const words = [...document.querySelectorAll('#words .word:not(.masked)')];
            const real = words.filter((w) => w.textContent.trim() !== '?');
            (word < 0 ? real[real.length + word] : words[word]).focus();
            """,
            layer,
            head,
            word,
            overlay,
        )
        errors = page_errors(driver)
        if errors:
            raise RuntimeError(f"the page reported errors: {errors}")
        # The whole page, not just the window: make the viewport as tall as the document.
        width, height = driver.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
        )
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        driver.save_screenshot(str(png))
    return png
