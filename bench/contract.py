"""Contract run: schemathesis over every operation of a real `loglens serve` for a fixed time.

Each round sends positive and negative cases to every operation (the SSE stream excepted: it never
ends by design) with checks for 5xx, undocumented status codes, content types and response bodies,
doubling the examples per operation each round with a new seed, until `--minutes` have passed.
Prints the number of cases, 5xx answers and contract deviations (issue 17: both must be 0).

    python bench/contract.py [--minutes 5]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "reliability"))  # the cases the contract test sends
import openapi_cases  # noqa: E402


def start(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`loglens serve --port 0` on a fresh store; its URL read from the "listening" line."""
    cfg = tmp / "config.yaml"
    cfg.write_text(
        f"storage: {{path: {tmp / 'store.duckdb'}}}\n"
        f"schemas: {{log: {REPO / 'schemas/log_schema.yaml'}, anomaly: {REPO / 'schemas/anomaly_schema.yaml'}}}\n"
        "notifiers: []\n",
        encoding="utf-8",
    )
    err = (tmp / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loglens.cli", "serve", "--config", str(cfg), "--port", "0"], stderr=err
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in (tmp / "stderr.log").read_text().splitlines():
            if '"loglens listening"' in line:
                import orjson

                return proc, orjson.loads(line)["metadata"]["url"].rstrip("/")
        time.sleep(0.1)
    raise SystemExit("server did not start")


def run_operation(op: Any, url: str, examples: int, seed_value: int, tally: dict[str, Any]) -> None:
    def count(response: Any) -> None:
        tally["cases"] += 1
        tally["5xx"] += response.status_code >= 500

    tally["deviations"].extend(
        openapi_cases.failures(
            op, url, examples, openapi_cases.CONTRACT_CHECKS, seed_value=seed_value, on_response=count
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(Path(tmp))
        try:
            ops = openapi_cases.operations(url)
            tally: dict[str, Any] = {"cases": 0, "5xx": 0, "deviations": []}
            started, examples, rounds = time.monotonic(), 10, 0
            while time.monotonic() - started < args.minutes * 60:
                for op in ops:
                    run_operation(op, url, examples, rounds, tally)
                    if time.monotonic() - started >= args.minutes * 60:
                        break
                rounds += 1
                examples *= 2
            healthy = httpx.get(url + "/healthz", timeout=30).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    minutes = (time.monotonic() - started) / 60
    print(
        f"operations {len(ops)}, rounds {rounds}, cases {tally['cases']}, minutes {minutes:.1f}, "
        f"5xx {tally['5xx']}, deviations {len(tally['deviations'])}, healthy after: {healthy}"
    )
    for line in sorted(set(tally["deviations"]))[:30]:
        print("  " + line)
    sys.exit(1 if tally["5xx"] or tally["deviations"] else 0)


if __name__ == "__main__":
    main()
