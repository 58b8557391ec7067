"""Open a trend page in headless Chromium: no console error, no network request; take its screenshot.

    python benchmarks/report_check.py build/report-check/site/index.html --screenshot trend.png

Chromium's own logs are the witnesses, so no driver or websocket package is needed:
- console messages: `--enable-logging=stderr` prints each as a `CONSOLE` line, whatever its
  level, and a page error (an uncaught exception, a load the page's policy refused) is one;
- requests: `--log-net-log` writes every URL request the browser starts to a JSON file, with its
  initiator; any that a document started, other than the page itself, is a request of the page.
Chromium's own traffic is mostly switched off by flags, and the rest has no document initiator.
Both witnesses are checked first on a control page that does log an error and does fetch a URL:
a check that cannot see a fault would pass every page. Exit 0 when the page is clean, 1 when
not, 2 when Chromium is missing or does not run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--metrics-recording-only", "--mute-audio",
         "--disable-features=OptimizationHints,MediaRouter,Translate,AutofillServerCommunication",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000"]
CONSOLE = re.compile(r":CONSOLE\b.*")  # '[pid:tid:time:INFO:CONSOLE:1] "message", source: URL (1)'
CONTROL = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>control</title></head><body>
<p>control page: logs an error and fetches a URL</p>
<script>console.error("report-check control error"); fetch("http://report-check.invalid/x").catch(() => {});</script>
</body></html>
"""


def open_page(chromium: str, page: Path, screenshot: Path | None, work: Path) -> tuple[list[str], list[str]]:
    """(console lines, URLs requested other than the page) of one headless load of `page`."""
    netlog = work / f"{page.stem}-netlog.json"
    profile = work / f"{page.stem}-profile"
    args = [chromium, *QUIET, f"--user-data-dir={profile}", f"--log-net-log={netlog}", "--window-size=1280,2200"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    p = subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"error: {chromium} exited {p.returncode}: {last}", file=sys.stderr)
        sys.exit(2)
    console = [m.group(0) for line in p.stderr.splitlines() if (m := CONSOLE.search(line))]
    return console, requests(netlog, page.resolve().as_uri())


def requests(netlog: Path, page_url: str) -> list[str]:
    """The URLs of the requests a document started (any scheme, file:// included), but the page's own.

    Chromium's own traffic (clock sync, spelling dictionaries, account checks) has the initiator
    "not an origin" in the net log; what a page fetches, loads or links has the page's origin
    ("null" for a file)."""
    text = netlog.read_text()
    try:
        log = json.loads(text)
    except ValueError:  # a log cut short when the browser exits: close it
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = {e["params"]["url"] for e in log["events"] if e["type"] == start
            and e.get("params", {}).get("initiator", "not an origin") != "not an origin"}
    return sorted(u for u in urls if u != page_url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--screenshot", type=Path)
    ap.add_argument("--chromium", default="chromium")
    a = ap.parse_args()
    chromium = shutil.which(a.chromium)
    if chromium is None:
        print(f"error: {a.chromium} not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    if not a.page.is_file():
        print(f"error: no page at {a.page}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        control = work / "control.html"
        control.write_text(CONTROL)
        console, urls = open_page(chromium, control, None, work)
        if not any("report-check control error" in line for line in console) or not urls:
            print(f"error: the check is blind: on the control page it saw console {console} and requests {urls}",
                  file=sys.stderr)
            return 2
        if a.screenshot:
            a.screenshot.parent.mkdir(parents=True, exist_ok=True)
        console, urls = open_page(chromium, a.page, a.screenshot, work)
    for line in console:
        print(f"console: {line}")
    for url in urls:
        print(f"request: {url}")
    print(f"{a.page}: {len(console)} console messages, {len(urls)} network requests"
          + (f"; screenshot {a.screenshot}" if a.screenshot else ""))
    return 1 if console or urls else 0


if __name__ == "__main__":
    sys.exit(main())
