"""10-minute soak: 20k logs/s over 50 services against a real `loglens serve` process.

Reports RSS at start/end, its max and the median of each quarter of the run, alert latency
(canary error burst → alert firing, at the start and the end), lost logs (acknowledged − stored,
read from the store file afterwards) and the machine's load average at the end.

    python bench/soak.py [--duration 600] [--rate 20000] [--services 50] [--senders 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "reliability"))  # the harness shared with the 60-s test

from soak_harness import run_soak  # noqa: E402


def main() -> int:
    """Run the soak and print its numbers; exit 1 when a log was lost."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--rate", type=float, default=20_000)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--senders", type=int, default=3)
    ap.add_argument("--memory-limit", default=None, help="storage.memory_limit for the server (e.g. 128MB)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="loglens-soak-") as tmp:
        result = run_soak(
            Path(tmp) / "soak", args.duration, args.rate, args.services, args.senders, memory_limit=args.memory_limit
        )
    print("\n".join(result.lines()))
    return 1 if result.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
