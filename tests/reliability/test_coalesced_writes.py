"""Response head and body leave in one socket write, in order, whatever follows the head."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from loglens.api.coalesce import CoalescingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class CountedWrites:
    """The real transport, with a note of each write it is asked for (each is one send())."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[CoalescingTransport, socket.socket, CountedWrites]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    theirs.setblocking(False)
    counted = CountedWrites(transport)
    return CoalescingTransport(counted, loop), theirs, counted  # type: ignore[arg-type]


async def _read(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, n), timeout=30)


def test_head_and_body_arrive_in_one_write() -> None:
    async def scenario() -> tuple[bytes, list[bytes]]:
        transport, peer, counted = await _pair()
        transport.write(HEAD)
        transport.write(b"hello")
        first = await _read(peer, 4096)
        transport.close()
        peer.close()
        return first, counted.writes

    assert asyncio.run(scenario()) == (HEAD + b"hello", [HEAD + b"hello"])


def test_a_head_alone_is_sent_on_the_next_loop_turn_and_before_close() -> None:
    async def scenario() -> tuple[bytes, bytes]:
        transport, peer, _ = await _pair()
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # nothing follows it in this turn
        alone = await _read(peer, 4096)
        transport.write(HEAD)
        transport.close()  # held bytes go out before the close
        rest = b""
        while chunk := await _read(peer, 4096):
            rest += chunk
        peer.close()
        return alone, rest

    assert asyncio.run(scenario()) == (b"HTTP/1.1 100 Continue\r\n\r\n", HEAD)


def test_other_writes_pass_straight_through_in_order() -> None:
    async def scenario() -> bytes:
        transport, peer, _ = await _pair()
        transport.write(b"data: 1\n\n")
        transport.writelines([HEAD, b"x"])
        transport.write(b"tail")
        transport.close()
        got = b""
        while chunk := await _read(peer, 4096):
            got += chunk
        peer.close()
        return got

    assert asyncio.run(scenario()) == b"data: 1\n\n" + HEAD + b"x" + b"tail"
