"""Template-mining benchmark on the loghub 2k datasets in tests/data/loghub, against Drain3.

For each dataset a fresh `TemplateMiner` (one fixed configuration for all of them)
mines the `Content` column of `X_2k.log_structured.csv`, and so does a fresh Drain3
`TemplateMiner` with its default configuration, on the very same list of strings.
Predicted template ids are scored against the ground-truth `EventId` with the loghub
grouping accuracy (GA). Our miner's ids are scored as returned by `add` and then
resolved with `TemplateMiner.resolve` after the run (a merge keeps the oldest id and
turns the others into aliases; "GA" column), and also raw, as returned ("GA raw").
Throughput is the best of `--repeat` cold runs (a new miner each time), both miners
timed in the same process, alternating, in CPU time of this process (`time.process_time`),
so that other load on a shared machine does not decide the ratio.

    python bench/templates.py                 # all eight sets, text table
    python bench/templates.py --markdown      # markdown
    python bench/templates.py --protocol      # the two halves of the protocol as well
    python bench/templates.py --synthetic 400 5000   # random-template streams instead
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from drain3 import TemplateMiner as Drain3Miner
from drain3.template_miner_config import TemplateMinerConfig

from loglens.detect import patterns
from loglens.detect.patterns import TemplateMiner, grouping_accuracy

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "loghub"
DATASETS = ("Android", "BGL", "HDFS", "Hadoop", "HealthApp", "OpenStack", "Spark", "Zookeeper")
# The generalisation protocol (docs/benchmarks_templates.md): develop on one half and measure the
# other, then swap. The halves alternate through the sets in alphabetical order.
HALF_A = ("Android", "HDFS", "HealthApp", "Spark")
HALF_B = ("BGL", "Hadoop", "OpenStack", "Zookeeper")


@dataclass(frozen=True)
class Result:
    """One dataset's scores for both miners."""

    dataset: str
    lines: int
    truth_templates: int
    templates: int
    accuracy: float
    accuracy_raw: float
    lines_per_s: float
    drain3_accuracy: float
    drain3_lines_per_s: float


def load(data: Path, dataset: str) -> tuple[list[str], list[str]]:
    """The `Content` messages and ground-truth `EventId`s of one loghub dataset."""
    with (data / f"{dataset}_2k.log_structured.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def _drain3() -> Drain3Miner:
    config = TemplateMinerConfig()  # Drain3's defaults, no ini file, no masking
    config.profiling_enabled = False
    return Drain3Miner(config=config)


def run(data: Path, dataset: str, repeat: int) -> Result:
    """Mine one dataset `repeat` times from cold with each miner; score the first run, time the fastest."""
    messages, truth = load(data, dataset)
    best = best_d3 = float("inf")
    raw: list[str] = []
    resolved: list[str] = []
    d3_ids: list[int] = []
    templates = 0
    for i in range(repeat):
        miner = TemplateMiner()
        start = time.process_time()
        results = miner.add_many(messages)
        best = min(best, time.process_time() - start)
        d3 = _drain3()
        start = time.process_time()
        d3_results = [d3.add_log_message(m) for m in messages]
        best_d3 = min(best_d3, time.process_time() - start)
        if i == 0:
            raw = [r.template_id for r in results]
            resolved = [miner.resolve(t) or t for t in raw]
            templates = len(miner)
            d3_ids = [r["cluster_id"] for r in d3_results]
    return Result(
        dataset=dataset,
        lines=len(messages),
        truth_templates=len(set(truth)),
        templates=templates,
        accuracy=grouping_accuracy(resolved, truth),
        accuracy_raw=grouping_accuracy(raw, truth),
        lines_per_s=len(messages) / best,
        drain3_accuracy=grouping_accuracy(d3_ids, truth),
        drain3_lines_per_s=len(messages) / best_d3,
    )


def synthetic(n_templates: int, n_lines: int = 50_000, seed: int = 7) -> tuple[list[str], list[int]]:
    """A reproducible stream from `n_templates` random word templates with 1-3 variables each
    (numbers, user names, IPs, hex, ``job_<n>`` ids), template frequencies Zipf-like."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 9)))

    words = [word() for _ in range(3000)]
    users = [word() for _ in range(500)]
    templates: list[tuple[list[str], dict[int, str]]] = []
    for _ in range(n_templates):
        n = rng.randint(4, 14)
        tokens = [rng.choice(words) for _ in range(n)]
        slots = rng.sample(range(n), k=rng.randint(1, 3))
        templates.append((tokens, {p: rng.choice(["num", "user", "ip", "hex", "id"]) for p in slots}))

    def value(kind: str) -> str:
        if kind == "num":
            return str(rng.randint(0, 10**6))
        if kind == "user":
            return rng.choice(users)
        if kind == "ip":
            return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}"
        if kind == "hex":
            return f"{rng.getrandbits(32):08x}"
        return f"job_{rng.randint(1000, 99999)}"

    truth = rng.choices(range(n_templates), weights=[1 / (i + 1) for i in range(n_templates)], k=n_lines)
    lines = []
    for i in truth:
        tokens, kinds = templates[i]
        lines.append(" ".join(value(kinds[p]) if p in kinds else tok for p, tok in enumerate(tokens)))
    return lines, truth


def run_synthetic(n_templates: int) -> Result:
    """`run` on a synthetic stream (one cold run each; these streams are long)."""
    messages, truth = synthetic(n_templates)
    miner = TemplateMiner()
    start = time.process_time()
    results = miner.add_many(messages)
    ours = time.process_time() - start
    d3 = _drain3()
    start = time.process_time()
    d3_ids = [d3.add_log_message(m)["cluster_id"] for m in messages]
    theirs = time.process_time() - start
    raw = [r.template_id for r in results]
    return Result(
        dataset=f"synthetic-{n_templates}",
        lines=len(messages),
        truth_templates=len(set(truth)),
        templates=len(miner),
        accuracy=grouping_accuracy([miner.resolve(t) or t for t in raw], truth),
        accuracy_raw=grouping_accuracy(raw, truth),
        lines_per_s=len(messages) / ours,
        drain3_accuracy=grouping_accuracy(d3_ids, truth),
        drain3_lines_per_s=len(messages) / theirs,
    )


def config_line() -> str:
    """The one configuration every dataset ran with."""
    return (
        f"min_values={patterns.DEFAULT_MIN_VALUES}, max_repeat={patterns.DEFAULT_MAX_REPEAT}, "
        f"max_clusters={patterns.DEFAULT_MAX_CLUSTERS}, {len(patterns.PLACEHOLDERS)} universal shapes"
    )


HEAD = (
    "dataset",
    "lines",
    "true tpl",
    "mined tpl",
    "GA",
    "GA raw",
    "lines/s",
    "Drain3 GA",
    "Drain3 lines/s",
    "speed ratio",
)


def _rows(results: list[Result]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        (
            r.dataset,
            str(r.lines),
            str(r.truth_templates),
            str(r.templates),
            f"{r.accuracy:.3f}",
            f"{r.accuracy_raw:.3f}",
            f"{r.lines_per_s:,.0f}",
            f"{r.drain3_accuracy:.3f}",
            f"{r.drain3_lines_per_s:,.0f}",
            f"{r.lines_per_s / r.drain3_lines_per_s:.2f}",
        )
        for r in results
    ]
    n = len(results)
    total = sum(r.lines for r in results)
    ours_s = sum(r.lines / r.lines_per_s for r in results)
    d3_s = sum(r.lines / r.drain3_lines_per_s for r in results)
    rows.append(
        (
            "Average",
            str(total),
            "",
            "",
            f"{sum(r.accuracy for r in results) / n:.3f}",
            f"{sum(r.accuracy_raw for r in results) / n:.3f}",
            f"{total / ours_s:,.0f}",
            f"{sum(r.drain3_accuracy for r in results) / n:.3f}",
            f"{total / d3_s:,.0f}",
            f"{d3_s / ours_s:.2f}",
        )
    )
    return rows


def render(results: list[Result], markdown: bool, title: str = "") -> str:
    """The results table with an average row."""
    rows = _rows(results)
    out: list[str] = [f"**{title}**", ""] if markdown and title else ([title] if title else [])
    if markdown:
        out += ["| " + " | ".join(HEAD) + " |", "|" + "|".join(["---"] + ["---:"] * (len(HEAD) - 1)) + "|"]
        out += ["| " + " | ".join(f"**{c}**" if row[0] == "Average" and c else c for c in row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEAD)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out += [fmt.format(*HEAD), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table(s)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--protocol", action="store_true", help="also print the two halves of the protocol")
    parser.add_argument("--data", type=Path, default=DATA, help="directory with the loghub 2k files")
    parser.add_argument("--repeat", type=int, default=5, help="cold runs per dataset; the fastest is timed")
    parser.add_argument(
        "--synthetic", type=int, nargs="*", metavar="N", help="instead: synthetic streams of N random templates"
    )
    parser.add_argument("datasets", nargs="*", default=list(DATASETS), help="datasets to run (default: all eight)")
    args = parser.parse_args(argv)
    if args.synthetic:
        print(render([run_synthetic(n) for n in args.synthetic], args.markdown, "Synthetic streams (50,000 lines)"))
        return 0
    results = {name: run(args.data, name, max(1, args.repeat)) for name in args.datasets}
    print(render(list(results.values()), args.markdown, "All sets"))
    if args.protocol:
        for name, half in (("A", HALF_A), ("B", HALF_B)):
            subset = [results[d] for d in half if d in results]
            if subset:
                print()
                print(render(subset, args.markdown, f"Half {name}: {', '.join(half)}"))
    print()
    print(f"config: {config_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
