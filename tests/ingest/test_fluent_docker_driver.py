"""Docker's `fluentd` log driver, as closely as can run here: its client library
fluent-logger-golang (Debian package) built into a small program that posts Docker's record shape
with the driver's `fluentd-request-ack` and `fluentd-sub-second-precision` options."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from protocol_helpers import logs

GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages install Go sources
SOURCE = Path(__file__).parent / "go_fluent" / "main.go"


@pytest.fixture(scope="session")
def dockerlike(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "go is missing: run environment/setup.sh (apt-get install golang-go)"
    library = GOPATH / "src/github.com/fluent/fluent-logger-golang"
    assert library.is_dir(), "run environment/setup.sh (apt-get install golang-github-fluent-fluent-logger-golang-dev)"
    out = tmp_path_factory.mktemp("go") / "dockerlike"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": str(GOPATH),
        "GOCACHE": str(out.parent / "cache"),
        "GOFLAGS": "",
    }
    subprocess.run([go, "build", "-o", str(out), str(SOURCE)], env=env, check=True, timeout=600)
    return out


@pytest.fixture
def fluent_server(settings_factory, live_server_factory):
    srv = live_server_factory(settings_factory("protocols:\n  fluent: {enabled: true, port: 0}\n"))
    return srv, srv.state.fluent


def test_docker_fluentd_driver_client(fluent_server, dockerlike):
    srv, server = fluent_server
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    out = subprocess.run([str(dockerlike), str(server.port), "checkout"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stdout + out.stderr
    rows = logs(srv.state, "fluent", 2)
    context = f"client stderr: {out.stderr!r}; listener: {server.stats}"
    assert [(r["service"], r["level"], r["message"]) for r in rows] == [
        ("checkout", "INFO", "GET /index.html 200"),
        ("checkout", "INFO", "upstream timed out"),
    ], context
    assert all(before <= r["ts"] <= datetime.now(UTC).replace(tzinfo=None) for r in rows)
    assert rows[0]["ts"].microsecond != 0 or rows[1]["ts"].microsecond != 0  # sub-second precision kept
    meta = orjson.loads(rows[1]["metadata"])
    assert meta == {
        "fluent_tag": "checkout",
        "container_id": "4f2c1d8e9a7b",
        "container_name": "/web",
        "source": "stderr",
    }
    assert server.stats.acks == 2, context  # RequestAck: each post waited for its ack, sent after the commit
