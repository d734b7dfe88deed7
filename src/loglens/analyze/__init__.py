"""Batch analysis of log archives on one machine, Dask or Ray (`loglens analyze`).

inputs (find + partition) → engines (run `worker.run_partition` per partition: the server's
`LogSchema` and `metrics.aggregate`) → driver (merge partials in partition order) →
detection (the server's detectors over the merged aggregates) → report (text, JSON, HTML).
Never imports `loglens.api`: batch runs need no server.
"""

from loglens.analyze.driver import AnalyzeOptions, run_analysis
from loglens.analyze.engines import ENGINES, DaskEngine, LocalEngine, RayEngine, make_engine
from loglens.analyze.report import render_html, render_json, render_text, write_report

__all__ = [
    "ENGINES",
    "AnalyzeOptions",
    "DaskEngine",
    "LocalEngine",
    "RayEngine",
    "make_engine",
    "render_html",
    "render_json",
    "render_text",
    "run_analysis",
    "write_report",
]
