"""Template-mining benchmark on the loghub 2k datasets in tests/data/loghub.

For each dataset a fresh `TemplateMiner` (one fixed configuration for all of them)
mines the `Content` column of `X_2k.log_structured.csv`; the predicted template ids
are scored against the ground-truth `EventId` with the loghub grouping accuracy,
and throughput is the best of `--repeat` cold runs (a new miner each time).

    python bench/templates.py              # text table
    python bench/templates.py --markdown   # markdown table (docs/benchmarks_templates.md)
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loglens.detect import patterns
from loglens.detect.patterns import TemplateMiner, grouping_accuracy

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "loghub"
DATASETS = ("Android", "BGL", "HDFS", "Hadoop", "HealthApp", "OpenStack", "Spark", "Zookeeper")


@dataclass(frozen=True)
class Result:
    """One dataset's score."""

    dataset: str
    lines: int
    truth_templates: int
    templates: int
    accuracy: float
    lines_per_s: float


def load(data: Path, dataset: str) -> tuple[list[str], list[str]]:
    """The `Content` messages and ground-truth `EventId`s of one loghub dataset."""
    with (data / f"{dataset}_2k.log_structured.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


def run(data: Path, dataset: str, repeat: int) -> Result:
    """Mine one dataset `repeat` times from cold; score the first run, time the fastest."""
    messages, truth = load(data, dataset)
    best = float("inf")
    predicted: list[str] = []
    templates = 0
    for i in range(repeat):
        miner = TemplateMiner()
        start = time.perf_counter()
        results = miner.add_many(messages)
        best = min(best, time.perf_counter() - start)
        if i == 0:
            predicted = [r.template_id for r in results]
            templates = len(miner)
    return Result(
        dataset=dataset,
        lines=len(messages),
        truth_templates=len(set(truth)),
        templates=templates,
        accuracy=grouping_accuracy(predicted, truth),
        lines_per_s=len(messages) / best,
    )


def config_line() -> str:
    """The one configuration every dataset ran with."""
    return (
        f"sim_th={patterns.DEFAULT_SIM_TH}, depth={patterns.DEFAULT_DEPTH}, "
        f"max_clusters={patterns.DEFAULT_MAX_CLUSTERS}, max_children={patterns.MAX_CHILDREN}, "
        f"{len(patterns.DEFAULT_MASKS)} masking rules, word-aware similarity"
    )


def render(results: list[Result], markdown: bool) -> str:
    """The results table with an average row."""
    avg_ga = sum(r.accuracy for r in results) / len(results)
    total_lines = sum(r.lines for r in results)
    total_s = sum(r.lines / r.lines_per_s for r in results)
    rows = [
        (
            r.dataset,
            str(r.lines),
            str(r.truth_templates),
            str(r.templates),
            f"{r.accuracy:.3f}",
            f"{r.lines_per_s:,.0f}",
        )
        for r in results
    ]
    rows.append(("Average", str(total_lines), "", "", f"{avg_ga:.3f}", f"{total_lines / total_s:,.0f}"))
    head = ("dataset", "lines", "true templates", "mined templates", "GA", "lines/s")
    if markdown:
        out = [
            "| " + " | ".join(head) + " |",
            "|" + "|".join(["---", "---:", "---:", "---:", "---:", "---:"]) + "|",
        ]
        out += ["| " + " | ".join(f"**{c}**" if row[0] == "Average" and c else c for c in row) + " |" for row in rows]
        out.append("")
        out.append(f"Config: {config_line()}.")
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*row) for row in rows]
    out.append(f"config: {config_line()}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--data", type=Path, default=DATA, help="directory with the loghub 2k files")
    parser.add_argument("--repeat", type=int, default=5, help="cold runs per dataset; the fastest is timed")
    parser.add_argument("datasets", nargs="*", default=list(DATASETS), help="datasets to run (default: all eight)")
    args = parser.parse_args(argv)
    results = [run(args.data, name, max(1, args.repeat)) for name in args.datasets]
    print(render(results, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
