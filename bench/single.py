"""Single-log POSTs: latency of one sequential keep-alive client and `wrk -c32` throughput.

In the same run it measures the ceiling to compare with: a bare Starlette route on uvicorn
(same loop and HTTP parser as loglens) that only reads the body and answers, and loglens's own
`GET /healthz` (the middleware stack without the write path). Every loglens 2xx here was
fsynced to the write-ahead log before it was sent.

    python bench/single.py [--seconds 10] [--requests 2000] [--markdown]

Needs `wrk` (Debian package); it is installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parents[1]
from bench_server import free_port, start_server  # noqa: E402  (bench/ is the script directory)

BARE_APP = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def ingest(request):
        await request.body()
        return JSONResponse({"accepted": 1, "rejected": 0, "errors": [], "duplicate": False})

    app = Starlette(routes=[Route("/api/v1/logs", ingest, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning")
    """
)


def ensure_wrk() -> str:
    """Path of wrk, installing the Debian package if needed."""
    found = shutil.which("wrk")
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk is not available")
    return found


def body() -> bytes:
    return orjson.dumps(
        {
            "timestamp": time.time(),
            "level": "INFO",
            "service": "bench",
            "message": "one log per request",
            "user_id": "u1",
        }
    )


def run_wrk(
    wrk: str, url: str, seconds: float, post: bytes | None, tmp: Path, connections: int = 32
) -> tuple[float, int, float, float]:
    """(requests/s, non-2xx responses, p50 ms, p99 ms) of `wrk -t2 -c32` (`-t1 -c1` for one connection)."""
    threads = 2 if connections > 1 else 1
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    if post is not None:
        script = tmp / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = [[{post.decode()}]]\nwrk.headers["Content-Type"] = "application/json"\n'
        )
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    if errors:
        print(f"  wrk: {errors.group(0)}", file=sys.stderr)
    return rps, int(bad.group(1)) if bad else 0, pct("50"), pct("99")


def sequential(url: str, n: int) -> tuple[float, float]:
    """p50 and p99 (ms) of `n` single-log POSTs from one keep-alive client, one after the other."""
    lat: list[float] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n + 50):
            payload = body()
            t0 = time.perf_counter()
            r = client.post("/api/v1/logs", content=payload, headers={"content-type": "application/json"})
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise SystemExit(f"ingest answered {r.status_code}: {r.text}")
            if i >= 50:  # warm-up
                lat.append(dt * 1e3)
    lat.sort()
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    wrk = ensure_wrk()
    payload = body()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        bare = subprocess.Popen(
            [sys.executable, "-c", BARE_APP, str(port)], env={**os.environ, "PYTHONPATH": str(REPO / "src")}
        )
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.post(f"http://127.0.0.1:{port}/api/v1/logs", content=b"{}", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            bare_rps, _bare_bad, bare_p50, bare_p99 = run_wrk(
                wrk, f"http://127.0.0.1:{port}/api/v1/logs", args.seconds, payload, tmp
            )
        finally:
            bare.terminate()
            bare.wait()
        port = free_port()
        server = start_server(tmp, port)
        url = f"http://127.0.0.1:{port}"
        try:
            seq_p50, seq_p99 = sequential(url, args.requests)
            # the same sequential client in C: the server's latency without a Python client's own
            _, one_bad, one_p50, one_p99 = run_wrk(wrk, f"{url}/api/v1/logs", args.seconds, payload, tmp, 1)
            health_rps, _, _, _ = run_wrk(wrk, f"{url}/healthz", args.seconds, None, tmp)
            rps, bad, p50, p99 = run_wrk(wrk, f"{url}/api/v1/logs", args.seconds, payload, tmp)
            stored = httpx.get(f"{url}/api/v1/metrics/summary", params={"minutes": 5}, timeout=60).json()
        finally:
            server.terminate()
            server.wait()
    total = sum(s["count"] for s in stored["most_active_services"])
    rows = [
        ("bare Starlette POST (wrk -c32)", f"{bare_rps:,.0f} req/s", f"p50 {bare_p50:.1f} ms, p99 {bare_p99:.1f} ms"),
        ("loglens GET /healthz (wrk -c32)", f"{health_rps:,.0f} req/s", f"{health_rps / bare_rps:.2f}x bare"),
        (
            "loglens POST one log (wrk -c32)",
            f"{rps:,.0f} req/s, {bad} non-2xx",
            f"{rps / bare_rps:.2f}x bare; p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        ),
        ("loglens POST one log, 1 sequential client", f"p50 {seq_p50:.2f} ms", f"p99 {seq_p99:.2f} ms (httpx)"),
        (
            "loglens POST one log, 1 connection (wrk)",
            f"p50 {one_p50:.2f} ms",
            f"p99 {one_p99:.2f} ms, {one_bad} non-2xx",
        ),
        ("logs stored by the run (summary)", f"{total:,}", ""),
    ]
    if args.markdown:
        print("| measurement | result | notes |\n|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} |")
    else:
        for r in rows:
            print(f"{r[0]:<45} {r[1]:<28} {r[2]}")


if __name__ == "__main__":
    main()
