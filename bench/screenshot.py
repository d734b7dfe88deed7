"""Screenshot of the dashboard with generated traffic → docs/dashboard.png.

Starts `loglens serve` on a free loopback port, sends an hour of traffic from five services (with
an error burst on `payments` that fires the error-rate alert, a volume burst on `search`, one
service that goes silent, and a few invalid records for the dead-letter tab), then opens the
dashboard in Debian's Chromium and saves a full-page screenshot.

    python bench/screenshot.py [--out docs/dashboard.png] [--width 1600] [--dark]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_server import free_port, start_server  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from loglens.demo import make_log  # noqa: E402

SERVICES = ("checkout", "payments", "search", "auth", "inventory")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def hour_of_traffic(now: float, rng: random.Random) -> list[dict[str, Any]]:
    """~60 minutes × 5 services with daily-looking waves; payments errors climb at the end."""
    logs = []
    for minute in range(60, 0, -1):
        for i, svc in enumerate(SERVICES):
            base = 40 + 25 * math.sin((60 - minute) / 9 + i)
            n = max(5, int(rng.gauss(base, 5)))
            err = 0.02 + 0.01 * i
            if svc == "payments" and minute <= 8:
                err = 0.08 + 0.03 * (8 - minute)
            for _ in range(n):
                ts = now - minute * 60 + rng.random() * 60
                level = "ERROR" if rng.random() < err else rng.choice(["INFO", "INFO", "INFO", "WARN", "DEBUG"])
                log = make_log(rng, svc, level, ts)
                if svc == "search":
                    log["response_time_ms"] = round(log["response_time_ms"] * 2.2, 2)
                logs.append(log)
    return logs


def post(client: httpx.Client, logs: list[dict[str, Any]]) -> None:
    for i in range(0, len(logs), 5000):
        client.post("/api/v1/logs", json=logs[i : i + 5000]).raise_for_status()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "dashboard.png")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--dark", action="store_true")
    args = ap.parse_args()
    rng = random.Random(42)

    with tempfile.TemporaryDirectory(prefix="loglens-shot-") as tmpdir:
        tmp = Path(tmpdir)
        port = free_port()
        # a short absence threshold so `legacy-batch` shows as silent
        proc = start_server(tmp, port, "alerts: {rules: {absence: {threshold_seconds: 10}}}\n")
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=url, timeout=60) as client:
                now = time.time()
                post(client, [make_log(rng, "legacy-batch", "INFO", now - 30 + k) for k in range(20)])
                post(client, hour_of_traffic(now, rng))
                client.post("/api/v1/logs", json=[{"level": "INFO", "service": "auth"}, {"timestamp": "yesterday"}])
                # live: the last seconds keep coming, with the error burst and a volume spike
                for _ in range(24):
                    t = time.time()
                    live = [make_log(rng, s, "INFO", t) for s in SERVICES for _ in range(3)]
                    live += [make_log(rng, "payments", "ERROR", t) for _ in range(6)]
                    live += [make_log(rng, "search", "INFO", t) for _ in range(12)]
                    post(client, live)
                    time.sleep(0.5)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(
                    viewport={"width": args.width, "height": 1000},
                    color_scheme="dark" if args.dark else "light",
                    device_scale_factor=1,
                )
                page.goto(url + "/")
                page.wait_for_function(
                    "() => window.__loglens && window.__loglens.connection === 'live' && window.__loglens.refreshes > 0",
                    timeout=15000,
                )
                page.wait_for_timeout(2500)
                # show hover values on the error-rate chart, near the end of the hour
                box = page.locator("#chart-error_rate .u-over").bounding_box()
                if box:
                    page.mouse.move(box["x"] + box["width"] * 0.93, box["y"] + box["height"] * 0.5)
                page.wait_for_timeout(300)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
