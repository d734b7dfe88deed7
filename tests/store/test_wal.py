"""The write-ahead log on real files: framing, checksums, torn tails, segments."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from loglens.store.wal import HEADER_SIZE, Frame, KeyRecord, Wal, decode_payload, encode, encode_frame


def _logs(first_id: int, n: int) -> pa.Table:
    return pa.table({"id": pa.array(range(first_id, first_id + n), pa.int64()), "message": [f"m{i}" for i in range(n)]})


def _frame(first_id: int, n: int, key: str | None = None) -> Frame:
    keys = [KeyRecord(key, n, 0, 123)] if key else []
    return Frame(_logs(first_id, n), None, keys=keys, first_log_id=first_id)


def test_a_frame_round_trips_with_its_keys_replays_and_tables() -> None:
    dead = pa.table({"id": pa.array([7], pa.int64()), "reason": ["bad"]})
    frame = Frame(_logs(1, 3), dead, [KeyRecord("k", 3, 1, 99)], [4, 5], 1234, first_log_id=1, first_dead_id=7)
    data = encode(frame)
    back = decode_payload(data[:HEADER_SIZE], data[HEADER_SIZE:])
    assert back.logs is not None and back.logs.equals(frame.logs)
    assert back.dead is not None and back.dead.equals(dead)
    assert back.keys == [KeyRecord("k", 3, 1, 99)]
    assert back.replayed_dead_ids == [4, 5] and back.replayed_at_us == 1234
    assert (back.first_log_id, back.first_dead_id) == (1, 7)


def test_append_read_and_reopen_find_every_frame(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal")
    wal.open(0)
    ends = [wal.append(encode(_frame(i * 10 + 1, 10, key=f"k{i}"))) for i in range(5)]
    frames = list(wal.read(0, wal.end_lsn, max_logs=1_000))
    assert [f.end for f in frames] == ends
    assert [f.frame.first_log_id for f in frames] == [1, 11, 21, 31, 41]
    wal.close()

    again = Wal(tmp_path / "wal")
    scan = again.open(ends[1])  # the first two frames are loaded
    assert scan.end_lsn == ends[-1] and scan.frames == 3 and scan.torn_bytes == 0
    assert scan.max_log_id == 50
    assert [k.key for k in scan.keys] == ["k2", "k3", "k4"]
    again.close()


@pytest.mark.parametrize("cut", [1, HEADER_SIZE - 1, HEADER_SIZE + 5, -1])
def test_a_torn_last_frame_is_dropped_by_its_checksum(tmp_path: Path, cut: int) -> None:
    wal = Wal(tmp_path / "wal")
    wal.open(0)
    good = wal.append(encode(_frame(1, 5)))
    torn = encode(_frame(6, 5, key="never-acknowledged"))
    (seg,) = wal.segments()
    wal.close()
    with seg[1].open("ab") as f:  # a crash in the middle of the write of the next frame
        f.write(torn[:cut] if cut > 0 else torn[:-1])
    again = Wal(tmp_path / "wal")
    scan = again.open(0)
    assert scan.end_lsn == good and scan.torn_bytes > 0 and scan.frames == 1
    assert scan.keys == [] and scan.max_log_id == 5
    assert seg[1].stat().st_size == good  # cut back, so the next frame follows the last good one
    end = again.append(encode(_frame(6, 5)))
    assert [f.frame.first_log_id for f in again.read(0, end, 100)] == [1, 6]
    again.close()


def test_a_flipped_bit_ends_the_log_at_the_damaged_frame(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal")
    wal.open(0)
    first = wal.append(encode(_frame(1, 5)))
    wal.append(encode(_frame(6, 5)))
    (seg,) = wal.segments()
    wal.close()
    data = bytearray(seg[1].read_bytes())
    data[first + HEADER_SIZE + 40] ^= 0x01
    seg[1].write_bytes(bytes(data))
    again = Wal(tmp_path / "wal")
    assert again.open(0).end_lsn == first
    again.close()


def test_segments_roll_over_and_loaded_ones_are_removed(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal", segment_bytes=1 << 16)
    wal.open(0)
    ends = [wal.append(encode(_frame(i * 500 + 1, 500, key=f"k{i}"))) for i in range(30)]
    assert len(wal.segments()) > 2
    wal.close()
    rescan = Wal(tmp_path / "wal", segment_bytes=1 << 16)
    scan = rescan.open(ends[3])  # closed segments are read by headers and metadata only
    assert [k.key for k in scan.keys] == [f"k{i}" for i in range(4, 30)]
    assert scan.max_log_id == 15_000 and scan.end_lsn == ends[-1] and scan.frames == 26
    wal = rescan
    frames = list(wal.read(0, wal.end_lsn, max_logs=10**9))
    assert [f.end for f in frames] == ends  # reading crosses segment boundaries
    assert len(list(wal.read(0, wal.end_lsn, max_logs=1_000))) == 2  # a batch stops at max_logs
    removed = wal.remove_loaded(ends[-1])
    assert removed >= 2 and len(wal.segments()) == 1  # the open segment stays
    assert wal.size_bytes() == sum(p.stat().st_size for _, p in wal.segments())
    wal.close()
    again = Wal(tmp_path / "wal", segment_bytes=1 << 16)
    assert again.open(ends[-1]).end_lsn == ends[-1]
    again.close()


def test_a_failed_append_leaves_no_half_frame(tmp_path: Path) -> None:
    wal = Wal(tmp_path / "wal")
    wal.open(0)
    good = wal.append(encode(_frame(1, 5)))
    assert wal._fd is not None
    os.close(wal._fd)  # the next write fails like an I/O error would
    wal._fd = os.open(wal.segments()[-1][1], os.O_RDONLY)
    with pytest.raises(OSError):
        wal.append(encode(_frame(6, 5)))
    assert wal.end_lsn == good
    wal.close()


def test_a_frame_appended_in_pieces_reads_back_like_one_written_whole(tmp_path: Path) -> None:
    dead = pa.table({"id": pa.array([7], pa.int64()), "reason": ["bad"]})
    frame = Frame(_logs(1, 300), dead, [KeyRecord("k", 300, 1, 99)], first_log_id=1, first_dead_id=7)
    pieces = encode_frame(frame)
    assert bytes(pieces) == encode(frame) and len(pieces) == len(encode(frame))
    wal = Wal(tmp_path / "wal")
    wal.open(0)
    end = wal.append(pieces)
    assert end == len(pieces)
    (back,) = list(wal.read(0, end, 1_000))
    assert back.frame.logs is not None and back.frame.logs.equals(frame.logs)
    assert back.frame.dead is not None and back.frame.dead.equals(dead)
    wal.close()
    again = Wal(tmp_path / "wal")
    assert again.open(0).frames == 1
    again.close()


def test_tables_read_back_have_aligned_buffers() -> None:
    # A section starts at an odd offset of its frame (a 5-byte section header, metadata before
    # it); Acero (metric aggregation on replay) warns and may misbehave on unaligned columns.
    frame = Frame(_logs(1, 50), None, [KeyRecord("odd-length-key", 50, 0, 1)], first_log_id=1)
    data = encode(frame)
    back = decode_payload(data[:HEADER_SIZE], data[HEADER_SIZE:])
    assert back.logs is not None
    for column in back.logs.columns:
        for chunk in column.chunks:
            assert all(b is None or b.address % 8 == 0 for b in chunk.buffers())
