"""JSON text of values pyarrow.json parsed, written as `orjson.dumps` writes them, in Arrow compute.

The exact path stores a log's `metadata` object as `orjson.dumps(value)`. On the NDJSON fast
path pyarrow.json has already parsed every line into columns, so parsing each line again with
orjson (microseconds per row) only to write the object back would cost more than the rest of
validation. Instead the text is rebuilt column-wise, a few Arrow kernels per field of the object.

A column cannot always say exactly what the line held; those rows are *redone*: read again from
their line with orjson, as the exact path does. That happens for strings that need escapes,
strings pyarrow read as timestamps, doubles whose notation Arrow and orjson choose differently,
NaN/Infinity, integral doubles (`2` widened because another row holds `2.5`, or `2.0`), nulls
in lists (pyarrow.json misplaces them) and a null member of an object when the line contains
`null` (an absent key and an explicit `null` are both null in a column). The result is the
exact path's text, but for the order of an object's keys when rows of one batch list them in
different orders (the columns keep the batch's first-seen order).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

# Quote, backslash and control characters: orjson escapes them (and nothing else).
_NEEDS_ESCAPE = r'[\x00-\x1f"\\]'
_NULL_TEXT = pa.scalar(None, pa.string())

Part: TypeAlias = pa.Array | str


class NdjsonLines:
    """Line i of an NDJSON body whose every line is one record (offsets found on first use)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self._starts: np.ndarray | None = None
        # Without a backslash no string in the body can hold a character orjson escapes: JSON
        # text has no raw quote, backslash or control character inside a string.
        self.has_escapes = b"\\" in body

    def __call__(self, i: int) -> bytes:
        if self._starts is None:
            ends = np.flatnonzero(np.frombuffer(self.body, np.uint8) == ord("\n"))
            self._starts = np.concatenate([[0], ends + 1, [len(self.body) + 1]])
        return self.body[int(self._starts[i]) : int(self._starts[i + 1]) - 1]


@dataclass(slots=True)
class _Rendered:
    """The text of each row is the concatenation of `parts` (null where any part is null).

    `redo` marks rows whose text can't be trusted (orjson writes them from the line);
    `holes` marks rows with a null object member (an absent key, or an explicit `null`).
    """

    parts: list[Part]
    redo: np.ndarray
    holes: np.ndarray

    def text(self) -> pa.Array:
        """The concatenated text (one kernel for however many parts)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], pa.Array):
            return self.parts[0]
        return pc.binary_join_element_wise(*self.parts, "")


def true_mask(arr: pa.Array) -> np.ndarray:
    """A numpy mask of the rows where a boolean column is true (null counts as false)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _render(arr: pa.Array, escapes: bool) -> _Rendered:
    n = len(arr)
    none = np.zeros(n, dtype=bool)
    kind = arr.type
    if pa.types.is_string(kind):
        redo = true_mask(pc.match_substring_regex(arr, _NEEDS_ESCAPE)) if escapes else none
        return _Rendered(['"', arr, '"'], redo, none)
    if pa.types.is_integer(kind):
        return _Rendered([arr.cast(pa.string())], none, none)
    if pa.types.is_floating(kind):
        return _render_double(arr)
    if pa.types.is_boolean(kind):
        return _Rendered([pc.if_else(arr, "true", "false")], none, none)
    if pa.types.is_null(kind):
        return _Rendered([pa.nulls(n, pa.string())], none, none)
    if isinstance(arr, pa.StructArray):
        return _render_object(arr, escapes)
    if isinstance(arr, pa.ListArray):
        return _render_list(arr, escapes)
    return _Rendered([pa.nulls(n, pa.string())], true_mask(pc.is_valid(arr)), none)  # timestamps, ...


def _render_double(arr: pa.Array) -> _Rendered:
    # Arrow's shortest round-trip digits are orjson's; orjson picks exponent notation outside
    # [1e-5, 1e16): rows where Arrow chose the other notation are redone. So are integral
    # values: pyarrow widens `2` to a double when another row holds `2.5`, and only the line
    # tells `2` (orjson: `2`) from `2.0` (orjson: `2.0`).
    text = arr.cast(pa.string())
    size = pc.abs(arr)
    plain_range = pc.or_(pc.and_(pc.greater_equal(size, 1e-5), pc.less(size, 1e16)), pc.equal(size, 0))
    other_notation = pc.equal(plain_range, pc.match_substring(text, "e"))
    integral = pc.equal(pc.floor(arr), arr)  # NaN: false; ±Infinity: true
    doubtful = pc.or_(pc.or_(pc.invert(pc.is_finite(arr)), integral), other_notation)
    return _Rendered([text], true_mask(doubtful), np.zeros(len(arr), dtype=bool))


def _render_object(arr: pa.StructArray, escapes: bool) -> _Rendered:
    n = len(arr)
    valid = true_mask(pc.is_valid(arr)) if arr.null_count else np.ones(n, dtype=bool)
    redo = np.zeros(n, dtype=bool)
    holes = np.zeros(n, dtype=bool)
    members: list[tuple[str, _Rendered]] = []
    for k, child in enumerate(arr.flatten()):
        part = _render(child, escapes)
        redo |= part.redo
        holes |= part.holes
        members.append((orjson.dumps(arr.type.field(k).name).decode() + ":", part))
    absent = [
        valid & ~true_mask(pc.is_valid(part.text()))
        for _, part in members
        if any(isinstance(p, pa.Array) and p.null_count for p in part.parts)
    ]
    if not members:
        parts: list[Part] = [pc.if_else(pa.array(valid), pa.scalar("{}"), _NULL_TEXT)]
    elif not any(a.any() for a in absent):
        # every member present in every object: one concatenation of all of them
        parts = ["{"]
        for k, (key, part) in enumerate(members):
            parts += [key if k == 0 else "," + key, *part.parts]
        parts.append("}")
        if arr.null_count:
            parts = [pc.if_else(pa.array(valid), pc.binary_join_element_wise(*parts, ""), _NULL_TEXT)]
    else:
        for a in absent:
            holes |= a
        # ",k1:v1,k2:v2" with absent members as "", then the leading comma dropped
        texts = [pc.binary_join_element_wise("," + key, *part.parts, "") for key, part in members]
        joined = pc.binary_join_element_wise(*texts, "", null_handling="replace", null_replacement="")
        body = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")
        parts = [pc.if_else(pa.array(valid), body, _NULL_TEXT) if arr.null_count else body]
    return _Rendered(parts, redo & valid, holes & valid)


def _render_list(arr: pa.ListArray, escapes: bool) -> _Rendered:
    n = len(arr)
    offsets = arr.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    lengths = np.diff(offsets)  # a null list may still span items: its row is null anyway
    valid = true_mask(pc.is_valid(arr))
    if offsets[-1] > len(arr.values) or arr.values.null_count:
        # pyarrow.json misplaces nulls in lists whose item type it widened from null (`[null, 1]`
        # is read as `[1, null]`, with offsets past the items): orjson writes these rows.
        return _Rendered([pa.nulls(n, pa.string())], valid & (lengths > 0), np.zeros(n, dtype=bool))
    part = _render(arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])), escapes)
    parents = np.repeat(np.arange(n), lengths)
    redo = np.zeros(n, dtype=bool)
    holes = np.zeros(n, dtype=bool)
    redo[parents[part.redo]] = True
    holes[parents[part.holes]] = True
    starts = pa.array((offsets - offsets[0]).astype(np.int32))
    lists = pa.ListArray.from_arrays(starts, part.text(), mask=pc.invert(pa.array(valid)))
    text = pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")
    return _Rendered([text], redo & valid, holes & valid)


def object_json(arr: pa.Array, name: str, lines: NdjsonLines) -> tuple[pa.Array, np.ndarray] | None:
    """JSON text of each object of the top-level field `name` (null for `{}`, as the exact path
    stores it) and a mask of the rows the fast path may accept (the others fail orjson, which
    gives the exact path's reason). None when the column is not one of objects."""
    n = len(arr)
    if pa.types.is_null(arr.type):
        return pa.nulls(n, pa.string()), np.ones(n, dtype=bool)
    if not isinstance(arr, pa.StructArray):
        return None
    rendered = _render(arr, lines.has_escapes)
    redo = rendered.redo
    for i in np.flatnonzero(rendered.holes & ~redo).tolist():
        redo[i] = b"null" in lines(i)  # no `null` in the line: every null member was absent
    text = rendered.text()
    ok = np.ones(n, dtype=bool)
    if redo.any():
        again: list[str | None] = []
        for i in np.flatnonzero(redo).tolist():
            try:
                record = orjson.loads(lines(i))
                value = record.get(name) if type(record) is dict else None
                again.append(orjson.dumps(value).decode() if value else None)
            except (orjson.JSONDecodeError, TypeError):  # NaN, integers beyond 64 bits, ...
                ok[i] = False
                again.append(None)
        text = pc.replace_with_mask(text, pa.array(redo), pa.array(again, pa.string()))
    empty = pc.equal(text, "{}")
    if pc.any(empty).as_py():
        text = pc.if_else(empty, _NULL_TEXT, text)  # `{}` is stored as no metadata
    return text, ok
