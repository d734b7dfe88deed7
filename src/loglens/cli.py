"""`loglens` command line: wiring only — each command builds stages from config and runs them."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from loglens import __version__
from loglens.config import Settings, load_settings, secret_value
from loglens.errors import ConfigError, LoglensError, describe

app = typer.Typer(
    name="loglens",
    help="High-throughput log analytics and monitoring engine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="Path of config.yaml.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loglens {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """loglens: collect, validate, store, aggregate and alert on logs."""


def load_or_exit(path: Path | None) -> Settings:
    """Load config or print each `file:line: key: message` and exit 2 — never a traceback."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        raise typer.Exit(2) from None


def shipper_token(settings: Settings) -> str | None:
    """The token `ingest`/`tail --url` send when none is given: the config's ingest, API or admin token."""
    server = settings.server
    return next((t for t in map(secret_value, (server.ingest_token, server.api_token, server.admin_token)) if t), None)


def _with_overrides(settings: Settings, host: str | None, port: int | None, data_dir: Path | None) -> Settings:
    server = settings.server.model_copy(update={k: v for k, v in (("host", host), ("port", port)) if v is not None})
    storage = settings.storage
    if data_dir is not None:
        storage = storage.model_copy(update={"path": data_dir / "loglens.duckdb"})
    flags = [k for k, v in (("server.host", host), ("server.port", port), ("storage.path", data_dir)) if v is not None]
    return settings.model_copy(
        update={"server": server, "storage": storage, "cli_overrides": (*settings.cli_overrides, *flags)}
    )


@app.command("check-config")
def check_config(path: Annotated[Path, typer.Argument(help="Config file to check.")] = Path("config.yaml")) -> None:
    """Validate a config file: prints OK, or each error with file:line and exits 2."""
    settings = load_or_exit(path)
    from loglens.notify import registry
    from loglens.schema import LogSchema

    issues = []
    for check in (
        lambda: LogSchema.from_file(settings.schemas.log),
        lambda: registry.build_all(settings),  # every notifier's plugin settings, by its own model
    ):
        try:
            check()
        except ConfigError as exc:  # report every problem of the file, not just the first
            issues.extend(exc.issues)
    for issue in issues:
        typer.echo(str(issue), err=True)
    if issues:
        raise typer.Exit(2)
    typer.echo("OK")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override server.port.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Directory of the DuckDB store.")] = None,
) -> None:
    """Run the API, dashboard and alerting server."""
    settings = _with_overrides(load_or_exit(config), host, port, data_dir)
    from loglens.api.server import run_server

    try:
        run_server(settings)
    except LoglensError as exc:
        raise typer.Exit(report_error(exc)) from None


@app.command()
def ingest(
    file: Annotated[str, typer.Argument(help="NDJSON/JSON file (.gz ok), or - for stdin.")],
    url: Annotated[str | None, typer.Option(help="Post to this server (e.g. http://127.0.0.1:8080).")] = None,
    config: ConfigOpt = None,
    batch_size: Annotated[int, typer.Option(help="Logs per request/commit.")] = 5000,
    token: Annotated[str | None, typer.Option(envvar="LOGLENS_API_TOKEN", help="API token.")] = None,
) -> None:
    """Ingest a file: post it to a running server (--url) or write it into the local store."""
    from loglens.ingest.file_ingest import ingest_file
    from loglens.ingest.gzipstream import GzipDamage, open_gunzip
    from loglens.runtime import local_pipeline

    settings = load_or_exit(config)
    if file == "-":
        stream = sys.stdin.buffer
        total = None
    else:
        p = Path(file)
        if not p.exists():
            typer.echo(f"{file}: no such file", err=True)
            raise typer.Exit(2)
        stream = open_gunzip(p) if p.suffix == ".gz" else p.open("rb")
        total = None if p.suffix == ".gz" else p.stat().st_size
    with stream:
        try:
            accepted, rejected = ingest_file(
                stream,
                total,
                settings,
                url=url,
                batch_size=batch_size,
                token=token or shipper_token(settings),
                local=local_pipeline,
            )
        except GzipDamage as exc:
            raise GzipDamage(f"{file}: {exc}") from None
    typer.echo(f"accepted {accepted}, rejected {rejected}")
    if rejected:
        typer.echo("rejected records are in the dead-letter store (GET /api/v1/dead-letter)")


@app.command()
def tail(
    paths: Annotated[list[Path], typer.Argument(help="NDJSON files to follow (rotation-safe).")],
    url: Annotated[str | None, typer.Option(help="Post to this server instead of the local store.")] = None,
    config: ConfigOpt = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Offsets file (default: next to the store).")] = None,
    once: Annotated[bool, typer.Option(help="Read what is there now and exit.")] = False,
    token: Annotated[str | None, typer.Option(envvar="LOGLENS_API_TOKEN", help="API token.")] = None,
) -> None:
    """Follow NDJSON files like `tail -F`; offsets are saved only after lines are committed."""
    import asyncio

    from loglens.ingest.tail import run_tail
    from loglens.runtime import local_pipeline

    settings = load_or_exit(config)
    try:
        lines = asyncio.run(
            run_tail(
                paths,
                settings,
                url=url,
                token=token or shipper_token(settings),
                checkpoint=checkpoint,
                once=once,
                local=local_pipeline,
            )
        )
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        raise typer.Exit(0) from None
    typer.echo(f"committed {lines} lines")


@app.command()
def demo(
    config: ConfigOpt = None,
    port: Annotated[int | None, typer.Option(help="Port of the demo server.")] = None,
    data_dir: Annotated[Path, typer.Option(help="Store directory of the demo.")] = Path("data/demo"),
    duration: Annotated[float, typer.Option(help="Seconds of traffic (0 = until Ctrl-C).")] = 0,
    fast: Annotated[bool, typer.Option(help="Compressed timeline for tests.")] = False,
    keep: Annotated[bool, typer.Option(help="Keep the previous run's store instead of starting fresh.")] = False,
) -> None:
    """Start a server and send generated traffic that triggers every alert type."""
    from loglens.demo import fresh_store, run_demo

    settings = _with_overrides(load_or_exit(config), None, port, data_dir)
    if not keep:  # a previous run's alerts and silent services would replay into this one
        fresh_store(settings)
    raise typer.Exit(run_demo(settings, duration=duration, fast=fast))


@app.command()
def analyze(
    paths: Annotated[list[str], typer.Argument(help="Files, globs or directories: NDJSON, JSON, .gz, Parquet, store.")],
    engine: Annotated[str, typer.Option(help="local | dask | ray")] = "local",
    address: Annotated[
        str | None, typer.Option(help="Existing cluster: tcp://HOST:8786 (dask), HOST:6379 (ray).")
    ] = None,
    partitions: Annotated[int | None, typer.Option(help="Number of partitions (default: one per CPU, ≥ 2).")] = None,
    since: Annotated[str | None, typer.Option(help="Only logs at/after this ISO 8601 time (UTC if no offset).")] = None,
    until: Annotated[str | None, typer.Option(help="Only logs before this ISO 8601 time.")] = None,
    service: Annotated[str | None, typer.Option(help="Only this service.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the report: report.json or report.html.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar of partitions done.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Analyse log archives (locally, on Dask or on Ray) with the server's own aggregation and rules."""
    from loglens.analyze.command import analyze_command

    raise typer.Exit(
        analyze_command(
            load_or_exit(config),
            paths,
            engine=engine,
            address=address,
            partitions=partitions,
            since=since,
            until=until,
            service=service,
            out=out,
            progress=progress,
        )
    )


@app.command()
def export(
    out: Annotated[Path | None, typer.Option(help="Archive directory (default: archive.directory).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only hours at/after this ISO 8601 time (UTC if no offset).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Only hours before this ISO 8601 time.")] = None,
    store: Annotated[Path | None, typer.Option(help="Store file (default: storage.path).")] = None,
    include_open: Annotated[
        bool, typer.Option(help="Also export the current hour and those within archive.delay_seconds.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Rewrite hours the manifest says are unchanged.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Archive the store's logs as hourly Parquet (date=/hour=/service=, zstd); resumable, idempotent."""
    from loglens.analyze.export import export_command

    raise typer.Exit(
        export_command(
            load_or_exit(config),
            out,
            since=since,
            until=until,
            store_path=store,
            include_open=include_open,
            force=force,
        )
    )


@app.command()
def backtest(
    files: Annotated[
        list[Path], typer.Argument(help="Archived logs: NDJSON, JSON or Parquet files (.gz ok), directories, globs.")
    ],
    rules: Annotated[
        Path | None, typer.Option("--rules", "--config", "-c", help="config.yaml whose alerts: rules to replay.")
    ] = None,
    patterns: Annotated[bool, typer.Option(help="Also mine templates (new_pattern).")] = True,
) -> None:
    """Replay archived logs through the alert rules (event time); print what would have fired."""
    from loglens.analyze.backtest import format_report, run_backtest
    from loglens.analyze.inputs import InputError

    settings = load_or_exit(rules)
    try:
        result = run_backtest(settings, files, patterns=patterns)
    except InputError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    for line in format_report(result):
        typer.echo(line)


notify_app = typer.Typer(help="Notification channels.", no_args_is_help=True)
app.add_typer(notify_app, name="notify")


@notify_app.command("test")
def notify_test(
    channel: Annotated[str, typer.Argument(help="Channel name from the notifiers: section.")],
    config: ConfigOpt = None,
) -> None:
    """Send a sample notification to CHANNEL; prints success or the exact error (exit 1)."""
    from loglens.notify.service import run_notify_test

    raise typer.Exit(run_notify_test(load_or_exit(config), channel))


UrlOpt = Annotated[
    str | None, typer.Option(help="Server URL (default: the configured server if it runs, else the local store).")
]
TokenOpt = Annotated[
    str | None, typer.Option(envvar=["LOGLENS_ADMIN_TOKEN", "LOGLENS_API_TOKEN"], help="API/admin token.")
]


@app.command()
def status(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Version, uptime, store size and rows, retention, rates, firing alerts and notifier health."""
    from loglens.ops.commands import status_command

    raise typer.Exit(status_command(load_or_exit(config), url, token, json_output))


dead_letter_app = typer.Typer(help="Rejected records: inspect and replay.", no_args_is_help=True)
app.add_typer(dead_letter_app, name="dead-letter")


@dead_letter_app.command("list")
def dead_letter_list(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    reason: Annotated[str | None, typer.Option(help="Substring of the rejection reason.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or an age like 30m, 2h, 7d.")] = None,
    limit: Annotated[int, typer.Option(help="Records to show.")] = 50,
) -> None:
    """List rejected records, newest first."""
    from loglens.ops.commands import dead_letter_list as run

    raise typer.Exit(run(load_or_exit(config), url, token, reason, since, limit))


@dead_letter_app.command("show")
def dead_letter_show(
    dead_id: Annotated[int, typer.Argument(metavar="ID", help="Dead-letter id.")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
) -> None:
    """Show one rejected record with its reason and raw text."""
    from loglens.ops.commands import dead_letter_show as run

    raise typer.Exit(run(load_or_exit(config), url, token, dead_id))


@dead_letter_app.command("replay")
def dead_letter_replay(
    config: ConfigOpt = None,
    url: UrlOpt = None,
    token: TokenOpt = None,
    reason: Annotated[str | None, typer.Option(help="Only records whose reason contains this.")] = None,
    since: Annotated[str | None, typer.Option(help="Only records received since (ISO 8601 or 30m, 2h, 7d).")] = None,
    ids: Annotated[list[int] | None, typer.Option("--id", help="Only this id (repeatable).")] = None,
) -> None:
    """Re-validate rejected records with the current schema and ingest the valid ones (each at most once)."""
    from loglens.ops.commands import dead_letter_replay as run

    raise typer.Exit(run(load_or_exit(config), url, token, reason, since, ids))


def report_error(exc: BaseException) -> int:
    """Print `exc` for the operator — one line per problem, no traceback — and return the exit code."""
    if isinstance(exc, ConfigError):
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        return 2
    if isinstance(exc, LoglensError):
        typer.echo(f"error: {exc}", err=True)
        return 2
    typer.echo(f"error: {describe(exc)} (set LOGLENS_DEBUG=1 for the traceback)", err=True)
    return 1


def main() -> None:
    """Console-script entry point: every error the user can cause ends as one clear line, never a traceback."""
    try:
        app()
    except Exception as exc:  # the last line of defence: a clear line instead of a traceback
        if os.environ.get("LOGLENS_DEBUG"):
            raise
        sys.exit(report_error(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
