"""Screenshots for README, from real runs: `.venv/bin/python
scripts/screenshots.py` (needs Debian's `chromium`).

It starts Redis, ClickHouse and luigid of its own in a temporary directory,
publishes a day large enough that its load can be watched, runs RunDaily
through luigid and takes docs/images/visualiser-running-load.png while
raw_features is staged; then a day with a damaged file, and takes
docs/images/visualiser-failure.png with the failed task's reason open, and
docs/images/visualiser-failed-status.png with its short status. The
SOT then republishes that day, which is reset and loaded:
docs/images/luigid-history.png shows the failure and its recovery. A few
more days (given up, failed with attempts left, not published, partly
done) make the day grid, printed as text and written as HTML, which is
checked in the browser (one coloured cell per day, no request made) and
taken as docs/images/status-grid.png. Chromium is driven over its DevTools
protocol (a websocket, spoken here with the standard library) to click the
buttons a person would."""
import base64
import datetime as dt
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from devkit.local_servers import LocalServers, free_port  # noqa: E402
from devkit.sample import make_snapshot, write_snapshot  # noqa: E402
from workflows import scheduler  # noqa: E402

IMAGES = os.path.join(REPO, "docs", "images")
DAY, BAD_DAY, WINDOW = dt.date(2024, 10, 30), dt.date(2024, 10, 29), 195
GAVE_UP, FAILED, UNPUBLISHED, PARTIAL = (dt.date(2024, 10, d) for d in (25, 26, 27, 28))


class DevTools:
    """The smallest DevTools client: one page, commands in, results out."""

    def __init__(self, port):
        deadline = time.monotonic() + 30
        while True:
            try:
                pages = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=1))
                url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
                break
            except (OSError, StopIteration):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        host_port, path = url.removeprefix("ws://").split("/", 1)
        host, port = host_port.split(":")
        self.sock = socket.create_connection((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          .encode())
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(1)
        self.next_id = 0

    def _read(self, n):
        data = b""
        while len(data) < n:
            data += self.sock.recv(n - len(data))
        return data

    def _frame(self):
        message = b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._read(8))[0]
            message += self._read(length)
            if first & 0x80:
                return message

    def call(self, method, **params):
        self.next_id += 1
        payload = json.dumps({"id": self.next_id, "method": method, "params": params}).encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        header += bytes([0x80 | len(payload)]) if len(payload) < 126 else \
            bytes([0x80 | 126]) + struct.pack(">H", len(payload))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while True:
            answer = json.loads(self._frame())
            if answer.get("id") == self.next_id:
                return answer.get("result", {})

    def open(self, url, seconds=3):
        self.call("Page.navigate", url="about:blank")  # a new document: a changed #hash alone would not load
        self.call("Page.navigate", url=url)
        time.sleep(seconds)

    def click(self, selector, seconds=2):
        self.call("Runtime.evaluate", expression=f"$({json.dumps(selector)}).first().click()")
        time.sleep(seconds)

    def evaluate(self, expression):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, name):
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path = os.path.join(IMAGES, name)
        with open(path, "wb") as stream:
            stream.write(base64.b64decode(data))
        print(f"wrote {os.path.relpath(path, REPO)}")


def grid_days(sot, env, luigi, work):
    """A day in each state the grid tells apart: one given up, one failed
    with attempts left (a worker that does not wait for the retry), one not
    published, one partly done (downloaded only)."""
    run = [luigi, "--module", "workflows"]
    for day in (GAVE_UP, FAILED):
        folder = write_snapshot(sot, "ethereum", day, WINDOW, make_snapshot("ethereum", day, WINDOW, 2_000))
        with open(os.path.join(folder, "raw_alerts.parquet"), "ab") as stream:
            stream.write(b"damaged")
    no_waiting = os.path.join(work, "no-waiting.cfg")
    with open(no_waiting, "w") as stream:
        stream.write("[worker]\nkeep_alive = false\n")
    days = ((GAVE_UP, {}), (FAILED, {"INGESTION_RETRY_ATTEMPTS": "3", "LUIGI_CONFIG_PATH": no_waiting}),
            (UNPUBLISHED, {}))
    for day, more in days:
        subprocess.run([*run, "RunDaily", "--date", day.isoformat(), "--local-scheduler"], cwd=REPO,
                       env={**env, **more}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    write_snapshot(sot, "ethereum", PARTIAL, WINDOW, make_snapshot("ethereum", PARTIAL, WINDOW, 2_000))
    subprocess.run([*run, "DownloadSOT", "--network", "ethereum", "--date", PARTIAL.isoformat(), "--window-days",
                    str(WINDOW), "--local-scheduler"], cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def main():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("chromium is not installed: apt-get install chromium")
    work = tempfile.mkdtemp(prefix="sot-screenshots-")
    servers = LocalServers(os.path.join(work, "servers"), luigi_config=os.path.join(REPO, "luigi.cfg")).start()
    browser = None
    try:
        sot = os.path.join(work, "sot")
        write_snapshot(sot, "ethereum", DAY, WINDOW, make_snapshot("ethereum", DAY, WINDOW, 1_500_000))
        bad = write_snapshot(sot, "ethereum", BAD_DAY, WINDOW, make_snapshot("ethereum", BAD_DAY, WINDOW, 2_000))
        with open(os.path.join(bad, "raw_alerts.parquet"), "ab") as stream:
            stream.write(b"damaged")
        env = dict(os.environ, **servers.env(), SOT_URL=sot, SOT_DOWNLOAD_DIR=os.path.join(work, "downloads"),
                   INGESTION_NETWORKS="ethereum", INGESTION_RETRY_ATTEMPTS="1")
        luigi = os.path.join(os.path.dirname(sys.executable), "luigi")
        port = free_port()
        browser = subprocess.Popen([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                                    f"--remote-debugging-port={port}", "--window-size=1400,820", "about:blank"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page = DevTools(port)
        os.makedirs(IMAGES, exist_ok=True)
        visualiser = f"{servers.scheduler_url}static/visualiser/index.html"

        run = subprocess.Popen([luigi, "--module", "workflows", "RunDaily", "--date", DAY.isoformat()], cwd=REPO,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not any("raw_features.parquet" in (t.get("status_message") or "") and
                      "rows staged" in (t.get("status_message") or "") for t in
                      scheduler.call("task_list", servers.scheduler_url, status="RUNNING").values()):
            if time.monotonic() > deadline or run.poll() is not None:
                raise SystemExit("no raw_features load to watch")
            time.sleep(0.2)
        time.sleep(1)
        page.open(f"{visualiser}#tab=workers")
        page.click("#workerList .statusMessage")
        page.screenshot("visualiser-running-load.png")
        run.wait()

        subprocess.run([luigi, "--module", "workflows", "RunDaily", "--date", BAD_DAY.isoformat()], cwd=REPO,
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page.open(f"{visualiser}#tab=tasks&statuses=%5B%22FAILED%22%2C%22DISABLED%22%5D")
        page.click("#taskTable td.details-control .showError")
        page.screenshot("visualiser-failure.png")
        page.open(f"{visualiser}#tab=tasks&statuses=%5B%22FAILED%22%2C%22DISABLED%22%5D")
        page.click("#taskTable .statusMessage")
        page.screenshot("visualiser-failed-status.png")

        # the SOT republishes the day: reset, run again; the history keeps the failure
        write_snapshot(sot, "ethereum", BAD_DAY, WINDOW, make_snapshot("ethereum", BAD_DAY, WINDOW, 2_000))
        workflows = [sys.executable, "-m", "workflows"]
        subprocess.run([*workflows, "reset", "--date", BAD_DAY.isoformat(), "--network", "ethereum"], cwd=REPO,
                       env=env, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([luigi, "--module", "workflows", "RunDaily", "--date", BAD_DAY.isoformat()], cwd=REPO,
                       env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        page.open(f"{servers.scheduler_url}history/by_name/VerifyChecksums")
        runs = urllib.request.urlopen(f"{servers.scheduler_url}history/by_name/VerifyChecksums").read().decode()
        # each record's link, then its parameters, up to the next record's link
        [record] = [link for link, rest in re.findall(r'href="/(history/by_id/\d+)"(.*?)(?=href="/history/by_id/|$)',
                                                     runs, re.S) if BAD_DAY.isoformat() in rest]
        page.open(servers.scheduler_url + record)  # the day's VerifyChecksums: failed, then done after the reset
        page.screenshot("luigid-history.png")

        grid_days(sot, env, luigi, work)
        html = os.path.join(work, "grid.html")
        shown = subprocess.run([*workflows, "status", "--grid", "--from", GAVE_UP.isoformat(), "--to",
                                DAY.isoformat(), "--html", html], cwd=REPO, env=env, check=True,
                               capture_output=True, text=True)
        print(shown.stdout)
        page.call("Network.enable")
        page.open(f"file://{html}", seconds=2)
        cells = page.evaluate("[...document.querySelectorAll('.cell')].map(c => c.className + ' '"
                              " + getComputedStyle(c).backgroundColor)")
        if len(cells) != (DAY - GAVE_UP).days + 1 or len({c.split(" ", 2)[2] for c in cells}) < 5:
            raise SystemExit(f"the grid page does not show one coloured cell per day: {cells}")
        if page.evaluate("performance.getEntriesByType('resource').length"):
            raise SystemExit("the grid page made a request")
        page.screenshot("status-grid.png")
    finally:
        if browser:
            browser.kill()
        servers.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
