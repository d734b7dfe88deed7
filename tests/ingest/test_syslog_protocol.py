"""Syslog: Python's SysLogHandler (UDP and TCP), util-linux `logger`, framing, garbage, batching."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from protocol_helpers import dead, logs

from loglens.config import FieldMapping, MappingsConfig, SyslogConfig
from loglens.errors import Backpressure
from loglens.ingest import syslog
from loglens.schema import Parsed

NOW = datetime(2026, 11, 23, 14, 0, 0, tzinfo=UTC)


@pytest.fixture
def syslog_server(settings_factory, live_server_factory):
    settings = settings_factory("protocols:\n  syslog: {enabled: true, udp_port: 0, tcp_port: 0}\n")
    srv = live_server_factory(settings)
    return srv, srv.state.syslog


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"syslog-test-{os.getpid()}-{time.monotonic_ns()}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger


def test_python_sysloghandler_udp_and_tcp(syslog_server):
    srv, server = syslog_server
    before = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    udp = logging.handlers.SysLogHandler(address=("127.0.0.1", server.udp_port))
    udp.ident = "orders: "
    log_udp = _logger(udp)
    log_udp.error("card declined")
    log_udp.info("order placed")
    udp.close()
    tcp = logging.handlers.SysLogHandler(address=("127.0.0.1", server.tcp_port), socktype=socket.SOCK_STREAM)
    tcp.ident = "payments[42]: "
    log_tcp = _logger(tcp)
    log_tcp.critical("ledger corrupt")
    log_tcp.warning("retrying")
    log_tcp.debug("detail")
    tcp.close()
    rows = logs(srv.state, "syslog", 5)
    got = sorted((r["service"], r["level"], r["message"]) for r in rows)
    assert got == sorted(
        [
            ("orders", "ERROR", "card declined"),
            ("orders", "INFO", "order placed"),
            ("payments", "FATAL", "ledger corrupt"),
            ("payments", "WARN", "retrying"),
            ("payments", "DEBUG", "detail"),
        ]
    )
    assert all(before <= r["ts"] <= datetime.now(UTC).replace(tzinfo=None) for r in rows)
    meta = orjson.loads(next(r for r in rows if r["service"] == "payments")["metadata"])
    assert meta == {"facility": "user", "syslog": "rfc3164", "procid": "42"}


def test_util_linux_logger_rfc5424_octet_counted_and_rfc3164(syslog_server):
    srv, server = syslog_server
    base = ["logger", "--server", "127.0.0.1"]
    subprocess.run(
        [
            *base,
            "--port",
            str(server.tcp_port),
            "--tcp",
            "--rfc5424",
            "--octet-count",
            "-t",
            "shipping",
            "-p",
            "local0.warning",
            "--sd-id",
            "meta@1",
            "--sd-param",
            'user_id="u-5"',
            "--sd-param",
            'response_time_ms="12.5"',
            "--msgid",
            "SHIP",
            "label printed",
        ],
        check=True,
        timeout=10,
    )
    subprocess.run(
        [
            *base,
            "--port",
            str(server.udp_port),
            "--udp",
            "--rfc5424",
            "-t",
            "shipping",
            "-p",
            "daemon.err",
            "printer offline",
        ],
        check=True,
        timeout=10,
    )
    subprocess.run(
        [*base, "--port", str(server.tcp_port), "--tcp", "--rfc3164", "-t", "legacy", "-p", "user.notice", "old style"],
        check=True,
        timeout=10,
    )
    rows = {r["message"]: r for r in logs(srv.state, "syslog", 3)}
    shipped = rows["label printed"]
    assert (shipped["service"], shipped["level"], shipped["user_id"], shipped["response_time_ms"]) == (
        "shipping",
        "WARN",
        "u-5",
        12.5,
    )
    assert abs((shipped["ts"] - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 30
    meta = orjson.loads(shipped["metadata"])
    assert meta["facility"] == "local0" and meta["msgid"] == "SHIP"
    assert meta["sd"]["meta@1"]["user_id"] == "u-5"
    assert (rows["printer offline"]["level"], rows["old style"]["service"]) == ("ERROR", "legacy")
    assert orjson.loads(rows["old style"]["metadata"])["syslog"] == "rfc3164"


def test_garbage_framing_and_oversize_go_to_dead_letter(syslog_server):
    srv, server = syslog_server
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as s:
        s.sendall(b"this is not syslog\n\xff" + os.urandom(64).replace(b"\n", b"").replace(b"\x00", b"") + b"\n")
        s.sendall(b"<999>1 - - - - - - bad pri\n")
        s.sendall(b'<13>1 2026-11-23T14:00:00Z h app - - [unclosed x="1" tail\n')
        s.sendall(b"x" * (10 * 1024 * 1024) + b"\n")  # a 10 MB single line
        s.sendall(b"<13>1 - h survivor - - - still here\n")
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as s:
        s.sendall(b"99999999 " + b"y" * 100)  # an octet count beyond max_message_bytes: connection dropped
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.sendto(os.urandom(100), ("127.0.0.1", server.udp_port))
        u.sendto(b"z" * 65000, ("127.0.0.1", server.udp_port))
    reasons = [r for r, _ in dead(srv.state, "syslog", 8)]
    assert len(reasons) == 8
    assert sum("not RFC 5424" in r for r in reasons) >= 3
    assert any("out of range" in r for r in reasons)
    assert any("exceeds max_message_bytes" in r for r in reasons)
    assert any("malformed structured data" in r for r in reasons)
    assert logs(srv.state, "syslog")[0]["service"] == "survivor"
    with srv.client() as client:
        assert client.get("/api/v1/logs").status_code == 200


def test_lines_of_a_syslog_file_without_pri_over_tcp(syslog_server):
    """`cat /var/log/syslog | nc host 5514`: BSD lines without `<PRI>` are RFC 3164 with PRI 13
    (user.notice); a tag such as `sshd(pam_unix)` gives the service `sshd`; free text that is no
    syslog line still goes to dead-letter."""
    srv, server = syslog_server
    with socket.create_connection(("127.0.0.1", server.tcp_port)) as s:
        s.sendall(
            b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; rhost=218.188.2.4 \n"
            b"Jul 27 14:42:00 combo kernel: Linux agpgart interface v0.100\n"
            b"Jul 27 14:41:57 combo syslogd 1.4.1: restart.\n"  # the tag ends where a tag cannot go on
            b"Error: disk full\n"
        )
    got = logs(srv.state, "syslog", 3)
    assert [(r["service"], r["level"], r["message"]) for r in got] == [
        ("sshd", "INFO", "authentication failure; rhost=218.188.2.4 "),
        ("kernel", "INFO", "Linux agpgart interface v0.100"),
        ("syslogd", "INFO", "1.4.1: restart."),
    ]
    meta = orjson.loads(got[0]["metadata"])
    assert meta == {
        "facility": "user",
        "syslog": "rfc3164",
        "pri_assumed": True,
        "hostname": "combo",
        "procid": "19939",
        "tag": "sshd(pam_unix)",
    }
    assert dead(srv.state, "syslog", 1)[0][1] == "Error: disk full"


def test_parse_message_units():
    m = MappingsConfig().syslog
    rec = syslog.parse_message(
        '<165>1 2026-11-23T14:00:00.5Z web01 nginx 77 ID47 [req@1 ip="203.0.113.5" trace_id="t-9" a="x\\"y\\]"]'
        "[other@2] \ufeffGET /",
        m,
        NOW,
    )
    assert rec == {
        "level": "INFO",
        "message": "GET /",
        "timestamp": "2026-11-23T14:00:00.5Z",
        "service": "nginx",
        "ip_address": "203.0.113.5",
        "trace_id": "t-9",
        "metadata": {
            "facility": "local4",
            "syslog": "rfc5424",
            "hostname": "web01",
            "procid": "77",
            "msgid": "ID47",
            "sd": {"req@1": {"ip": "203.0.113.5", "trace_id": "t-9", "a": 'x"y]'}, "other@2": {}},
        },
    }
    nil = syslog.parse_message("<14>1 - - - - - -", FieldMapping(default_service="dflt"), NOW)
    assert (nil["service"], nil["message"], nil["timestamp"]) == ("dflt", "", NOW.isoformat())
    assert "service" not in syslog.parse_message("<14>1 - - - - - - m", FieldMapping(), NOW)
    old = syslog.parse_message("<30>Nov 23 13:59:58 host1 cron[9]: job done\n", m, NOW)
    assert (old["service"], old["level"], old["message"]) == ("cron", "INFO", "job done")
    assert old["timestamp"].startswith("2026-11-23T13:59:58")
    assert syslog.parse_message("<30>Dec 31 23:00:00 h cron: x", m, NOW)["timestamp"].startswith("2025-12-31")
    for bad in (
        "<14>1 - - - - - x y",
        "<14>1 - - - - - [a b]",
        "<14>1 - - - - - [a b=c]",
        "<14>1 - - - - - [",
        "<30>Nov 31 00:00:00 h t: x",
        "hello",
        "<14>no tag here",
        "Error: disk full",  # no PRI, and no stamp and host either: free text, not syslog
        "Jun 14 15:16:01 sshd: no host",
    ):
        with pytest.raises(syslog.SyslogFormatError):
            syslog.parse_message(bad, m, NOW)
    assert syslog.parse_message('<14>1 - - a - - [x@1 response_time_ms="slow"]', m, NOW)["response_time_ms"] == "slow"


def test_tcp_framer_units():
    f = syslog.TcpFramer(100)
    msgs, fails, fatal = f.feed(b"11 <13>1 - - -\n\x00a\x00b")
    assert (msgs, fails, fatal) == ([b"<13>1 - - -", b"a"], [], False)
    assert f.finish() == b"b"
    f = syslog.TcpFramer(100)
    assert f.feed(b"12345678901234 x")[2] is True  # no space within a sane length prefix
    f = syslog.TcpFramer(100)
    assert f.feed(b"12a x")[2] is True
    f = syslog.TcpFramer(10)
    msgs, fails, fatal = f.feed(b"a" * 20)
    assert fails and not fatal
    assert f.feed(b"still long")[0] == []
    assert f.feed(b"\nok\n")[0] == [b"ok"]
    f = syslog.TcpFramer(100)
    assert f.feed(b"5 ab")[0] == []
    assert f.feed(b"cde")[0] == [b"abcde"]
    assert f.finish() is None


def test_batcher_retries_under_backpressure_and_drops_udp_when_full():
    calls: list[int] = []

    class FlakyPipeline:
        async def ingest(self, parsed: Parsed, source: str):
            calls.append(len(parsed))
            if len(calls) == 1:
                raise Backpressure("full", 0)

            class R:
                accepted = len(parsed) - len(parsed.failures)
                rejected = len(parsed.failures)

            return R()

    async def run() -> syslog.Batcher:
        cfg = SyslogConfig(flush_records=2, max_pending=3, flush_interval_ms=1)
        b = syslog.Batcher(FlakyPipeline(), FieldMapping(), cfg)  # type: ignore[arg-type]
        b.start()
        for i in range(4):
            b.add(f"<14>app: m{i}", datagram=True)
        await b.close()
        return b

    b = asyncio.run(run())
    assert b.stats.dropped == 1
    assert b.stats.committed == 3
    assert calls[0] == calls[1]  # the refused batch was retried whole
