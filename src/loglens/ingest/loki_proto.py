"""Loki's protobuf push body: snappy block compression around `logproto.PushRequest`.

This is what Promtail, Grafana Alloy (`loki.write`) and winston-loki send by default. The
message types are Loki's `pkg/push/push.proto` (field numbers and names as published; only the
gogoproto options, which change Go code generation and not the wire format, are left out):

    message PushRequest   { repeated StreamAdapter streams = 1; }
    message StreamAdapter { string labels = 1; repeated EntryAdapter entries = 2; uint64 hash = 3; }
    message EntryAdapter  { google.protobuf.Timestamp timestamp = 1; string line = 2;
                            repeated LabelPairAdapter structuredMetadata = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }

The descriptor is built here at import time with the `protobuf` runtime instead of committing
a `protoc`-generated `_pb2` module: generated code is tied to the protoc version that made it
(and checked against the runtime at import), while four small messages described in Python
keep working with whichever `protobuf` the project pins, and need no code generator.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from loglens.errors import ParseError, PayloadTooLarge

_FD = descriptor_pb2.FieldDescriptorProto


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="loglens/loki_push.proto",
        package="logproto",
        syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"],
    )

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            fd = m.field.add(name=fname, number=number, type=ftype, label=label, json_name=fname)
            if type_name:
                fd.type_name = type_name

    opt, rep = _FD.LABEL_OPTIONAL, _FD.LABEL_REPEATED
    message("PushRequest", ("streams", 1, _FD.TYPE_MESSAGE, rep, ".logproto.StreamAdapter"))
    message("PushResponse")
    message(
        "StreamAdapter",
        ("labels", 1, _FD.TYPE_STRING, opt, ""),
        ("entries", 2, _FD.TYPE_MESSAGE, rep, ".logproto.EntryAdapter"),
        ("hash", 3, _FD.TYPE_UINT64, opt, ""),
    )
    message("LabelPairAdapter", ("name", 1, _FD.TYPE_STRING, opt, ""), ("value", 2, _FD.TYPE_STRING, opt, ""))
    message(
        "EntryAdapter",
        ("timestamp", 1, _FD.TYPE_MESSAGE, opt, ".google.protobuf.Timestamp"),
        ("line", 2, _FD.TYPE_STRING, opt, ""),
        ("structuredMetadata", 3, _FD.TYPE_MESSAGE, rep, ".logproto.LabelPairAdapter"),
    )
    return f


def _build_pool() -> descriptor_pool.DescriptorPool:
    # A private pool: another library registering Loki's real push.proto cannot clash with ours.
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.AddSerializedFile(_file().SerializeToString())
    return pool


_POOL = _build_pool()
PushRequest: type[Message] = GetMessageClass(_POOL.FindMessageTypeByName("logproto.PushRequest"))
StreamAdapter: type[Message] = GetMessageClass(_POOL.FindMessageTypeByName("logproto.StreamAdapter"))
EntryAdapter: type[Message] = GetMessageClass(_POOL.FindMessageTypeByName("logproto.EntryAdapter"))


class _Timestamp(Protocol):
    seconds: int
    nanos: int


class _Pair(Protocol):
    name: str
    value: str


class Entry(Protocol):
    """The typed view of an `EntryAdapter` the decoder reads."""

    timestamp: _Timestamp
    line: str
    structuredMetadata: list[_Pair]  # the proto field name


class Stream(Protocol):
    """The typed view of a `StreamAdapter` the decoder reads."""

    labels: str
    entries: list[Entry]


def snappy_uncompressed_length(body: bytes) -> int:
    """The decoded size a snappy block announces in its varint header (ParseError when absent)."""
    length = shift = 0
    for i, byte in enumerate(body[:10]):
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7
        if i == 4:
            break
    raise ParseError("loki: body is not snappy-compressed protobuf: bad snappy length header")


def unsnappy(body: bytes, limit: int) -> bytes:
    """Decompress a snappy block (not the framed format), refusing to grow past `limit` bytes."""
    size = snappy_uncompressed_length(body)
    if size > limit:
        raise PayloadTooLarge(f"decompressed body of {size} bytes exceeds the {limit} byte limit")
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError as exc:
        raise ParseError(f"loki: body is not valid snappy-compressed data: {exc}") from None


def parse_push_request(data: bytes) -> list[Stream]:
    """The streams of a serialised `PushRequest` (ParseError when it is not one)."""
    request: Any = PushRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise ParseError(f"loki: body is not a Loki PushRequest protobuf: {exc}") from None
    return cast(list[Stream], list(request.streams))
