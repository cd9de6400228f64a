"""Open a page in headless Chromium and read back what a probe script found (no browser driver needed).

The probe runs in the page on ``load`` and writes ``PROBE <json>`` into a ``<pre>``; ``--dump-dom`` prints the DOM
after the page settled, and the JSON is parsed from it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)

SKIP_REASON = (
    "no chromium or chrome on PATH: `make browser` installs Debian's chromium (needs root and apt-get), "
    "and .ci/run does so where the machine allows it"
)

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
)


def chromium(args: list[str], profile: Path, timeout: float = 120) -> str:
    """Run the browser with the flags that work headless here and a fresh profile; returns stdout."""
    assert BROWSER is not None
    return subprocess.run(
        [BROWSER, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


def probe(page: str, script: str, tmp: Path, *, fragment: str = "") -> dict[str, Any]:
    """Load ``page`` with ``script`` (run on ``load``; it must set ``window.__probe`` to a JSON-able value) added
    before ``</body>``, and return that value."""
    wrapper = (
        "<script>window.addEventListener('load', () => { let r; try { r = (() => {"
        + script
        + "})(); } catch (e) { r = {error: String(e && e.stack || e)}; }"
        " const pre = document.createElement('pre'); pre.id = 'probe';"
        " pre.textContent = 'PROBE ' + JSON.stringify(r); document.body.appendChild(pre); });</script>"
    )
    head, sep, tail = page.rpartition("</body>")
    assert sep, "the page has no </body>"
    path = tmp / "probed.html"
    path.write_text(head + wrapper + sep + tail, encoding="utf-8")
    dom = chromium(["--virtual-time-budget=5000", "--dump-dom", path.as_uri() + fragment], tmp / "profile")
    found = re.search(r"PROBE (\{.*?\})</pre>", dom, re.S)
    assert found, f"the page did not finish loading in {BROWSER}"
    import html

    result = json.loads(html.unescape(found.group(1)))
    assert "error" not in result, result.get("error")
    return result
