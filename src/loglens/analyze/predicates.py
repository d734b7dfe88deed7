"""The log schema compiled to DuckDB SQL: a vectorised check of raw NDJSON lines.

`compile_checks()` turns the column checks that `schema_fast.FastPlan` derives from
`schemas/log_schema.yaml` (type, enum, length, pattern, minimum/maximum, formats, required,
aliases) into one SQL predicate per field over `json_extract` of each line. The predicate is
conservative in the same way as the Arrow fast path: it may only *accept* a line that the exact
per-record validator (`LogSchema`) also accepts, with the same normalised values. Every line it
does not accept goes back to the exact validator, which gives the exact reason — so a wrong
"no" costs speed, never correctness. Where DuckDB's JSON reader is laxer than orjson (NaN,
trailing commas, years 0000, 24:00) the line is not fast-accepted.

A key given twice in one line (`{"level": "INFO", ..., "level": "ERROR"}`) is read with its
first value by DuckDB and with its last by orjson (the server), so such a line is never
fast-accepted: when the line's top-level keys (`json_keys`, unescaped as DuckDB and orjson
compare them) are more than the schema fields found, they must all be distinct. The exact
validator then reads the line as the server does (last value wins).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loglens.schema.fast import _FAST_FORMATS, FastPlan, _Alt, _Prop
from loglens.timeparse import MAX_US, MS_THRESHOLD

_EPOCH_US_LIMIT = float(MAX_US // 10**15 * 10**15)  # 9999-01-01 or so: well inside the range, exact as a double

# Output columns of the check (the validated fields aggregation needs), in order.
CHECK_COLUMNS = ("i", "ok", "ts", "level", "service", "user_id", "response_time_ms", "late")

# RFC 3339 that both DuckDB's cast and Python's `datetime.fromisoformat` read identically:
# years 0001-9999, hours 00-23, seconds 00-59, offsets within a day.
_DATE_TIME = (
    r"^(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T"
    r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
# An epoch-number timestamp as the exact path reads it (`timeparse.parse_epoch`): milliseconds
# above MS_THRESHOLD, the same float64 steps, Python's round-half-even. Far-future values, where
# a double compared with MAX_US could round either way, go to the exact path (NULL here).
_EPOCH_SECONDS = f"(CASE WHEN n_timestamp > {MS_THRESHOLD!r} THEN n_timestamp / 1000.0 ELSE n_timestamp END)"
_EPOCH_US = (
    f"CASE WHEN n_timestamp >= 0 AND {_EPOCH_SECONDS} * 1000000.0 < {_EPOCH_US_LIMIT!r} "
    f"THEN round_even({_EPOCH_SECONDS} * 1000000.0, 0)::BIGINT END"
)
# Lines DuckDB's lenient JSON reader accepts but orjson rejects (NaN/Infinity literals, trailing
# commas) go to the exact validator. Matches inside string values are false alarms, which only
# cost the exact path for that line. (`contains` is a memmem; one regex alternation is 5x slower.)
_LENIENT = r"contains(line, 'NaN') OR contains(line, 'Infinity') OR regexp_matches(line, ',\s*[}\]]')"
# The JSON kind of an extracted value, told by its first byte (no second parse): `prefix` compares
# bytes, unlike `left(x, 1)` (which decodes UTF-8 characters: a fifth of the check's time), and
# is ~10 % cheaper than a byte-range comparison; not `IN (...)` lists (DuckDB plans each constant
# IN list as a join).
_FIRST_BYTE = {"string": '"', "object": "{"}


def _kind(name: str, kind: str) -> str:
    """The extracted JSON text `x_<name>` is a value of `kind` (string, object, number or null)."""
    x = f"x_{name}"
    if kind == "null":
        return f"{x} = 'null'"
    if kind == "number":
        return f"(({x} >= '-' AND {x} < '.') OR ({x} >= '0' AND {x} < ':'))"
    return f"prefix({x}, {sql_literal(_FIRST_BYTE[kind])})"


def _one_of(value: str, options: list[str]) -> str:
    """`value` equals one of `options` (an OR of comparisons: DuckDB plans a constant IN list as a join)."""
    return "(" + " OR ".join(f"{value} = {sql_literal(o)}" for o in options) + ")"


def sql_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class CompiledChecks:
    """SQL that checks the lines of table `lines(i BIGINT, line VARCHAR)` (see CHECK_COLUMNS)."""

    sql: str  # assumes every line is JSON: DuckDB raises on a malformed one
    guarded_sql: str  # also right when some lines are malformed (they come out not ok)
    # over `lines(line VARCHAR)`, a line NULL where it is not JSON (DuckDB's own reader with
    # ignore_errors): no `i` column, and `line` kept on the rows that are not ok (see worker)
    scan_sql: str
    fields: tuple[str, ...]


def _raw_string(name: str) -> str:
    # Strings without escapes are their JSON text minus the quotes; only escaped ones are parsed.
    # (`substr` rather than a `[2:-2]` slice: ~12 % of the check's CPU less.)
    return (
        f"(CASE WHEN {_kind(name, 'string')} THEN "
        f"CASE WHEN contains(x_{name}, '\\') THEN x_{name}::JSON ->> '$' ELSE substr(x_{name}, 2, length(x_{name}) - 2) END END)"
    )


def _string_value(name: str, prop: _Prop) -> str:
    """The string value after alias normalisation, from the raw string column `r_<name>`."""
    raw = f"r_{name}"
    if not prop.aliases:
        return raw
    cases = " ".join(f"WHEN {sql_literal(k)} THEN {sql_literal(v)}" for k, v in sorted(prop.aliases.items()))
    normalised = f"coalesce(CASE lower({raw}) {cases} END, {raw})"
    # Values the aliases map to themselves (the canonical spellings, usually most lines) skip
    # the lower-casing and the alias lookup: ~8 % of the check's CPU.
    fixed = sorted({t for t in prop.aliases.values() if prop.aliases.get(t.lower(), t) == t})
    if not fixed:
        return normalised
    return f"(CASE WHEN {_one_of(raw, fixed)} THEN {raw} ELSE {normalised} END)"


def _needs_text(name: str, prop: _Prop) -> bool:
    """Whether field `name`'s string value itself is read (output, enum, pattern, format) rather
    than only its length."""
    if name in _STRING_OUTPUTS:
        return True
    return any("string" in a.types and (a.enum, a.pattern, a.format) != (None, None, None) for a in prop.alts)


def _alt_sql(name: str, alt: _Alt, text: bool) -> str | None:
    """Predicate for one present, non-null value against one alternative; None = never fast.

    `text`: the unescaped value `s_<name>` exists; else only lengths are checked, on the JSON text
    (its characters minus the quotes when it has no escape: no copy of the value is made)."""
    conds: list[str] = []
    if "string" in alt.types:
        v = f"s_{name}"
        x = f"x_{name}"
        length = (
            f"length({v})"
            if text
            else f"(CASE WHEN contains({x}, '\\') THEN length({x}::JSON ->> '$') ELSE length({x}) - 2 END)"
        )
        conds.append(_kind(name, "string"))
        if alt.enum is not None:
            conds.append(_one_of(v, [str(e) for e in alt.enum]))
        if alt.min_length is not None:
            conds.append(f"{length} >= {int(alt.min_length)}")
        if alt.max_length is not None:
            conds.append(f"{length} <= {int(alt.max_length)}")
        if alt.pattern is not None:
            conds.append(f"regexp_matches({v}, {sql_literal(alt.pattern)})")
        if alt.format == "date-time":
            conds.append(f"regexp_full_match({v}, {sql_literal(_DATE_TIME)})")
        elif alt.format is not None:
            regex = _FAST_FORMATS.get(alt.format)
            if regex is None:
                return None  # e.g. ipv6: the exact validator decides
            conds.append(f"regexp_matches({v}, {sql_literal(regex)})")
    elif "number" in alt.types:
        v = f"n_{name}"
        conds.append(_kind(name, "number"))
        if alt.enum is not None or alt.format is not None:
            return None
        if alt.minimum is not None:
            conds.append(f"{v} >= {float(alt.minimum)!r}")
        if alt.maximum is not None:
            conds.append(f"{v} <= {float(alt.maximum)!r}")
    elif "object" in alt.types:
        conds.append(_kind(name, "object"))
    else:
        return None  # integer-only or other shapes: exact path
    return "(" + " AND ".join(conds) + ")"


def _field_sql(name: str, prop: _Prop) -> str:
    """The whole check of one field: missing, null or one of its alternatives."""
    alts = []
    for alt in prop.alts:
        sql = _alt_sql(name, alt, _needs_text(name, prop))
        if sql is not None:
            alts.append(sql)
    present = " OR ".join(alts) if alts else "false"
    missing = "false" if prop.required else "true"
    null = "true" if prop.nullable else "false"
    return f"(CASE WHEN x_{name} IS NULL THEN {missing} WHEN {_kind(name, 'null')} THEN {null} ELSE ({present}) END)"


_STRING_OUTPUTS = ("timestamp", "level", "service", "user_id")
_NUMBER_OUTPUTS = ("response_time_ms",)


def _reads(prop: _Prop, kind: str, name: str) -> bool:
    """Whether the checks or the output use field `name`'s value as a `kind` (string or number)."""
    if kind == "string":
        return _needs_text(name, prop)
    return name in _NUMBER_OUTPUTS or any(kind in alt.types for alt in prop.alts)


def compile_checks(document: dict[str, Any]) -> CompiledChecks | None:
    """The SQL check for a schema document, or None when the schema can't be checked in SQL.

    Parameters of the SQL: $now_us (clock), $skew_us (allowed future skew), $late_us (lateness).
    """
    plan = FastPlan.from_schema(document)
    if plan is None:
        return None
    names = tuple(plan.props)
    for needed in ("timestamp", "level", "service"):
        if needed not in names:
            return None
    paths = ", ".join(sql_literal(f'$."{n}"') for n in names)
    extract = ",\n    ".join(f"v[{k + 1}] AS x_{n}" for k, n in enumerate(names))
    # only the values some check or the output reads; each raw string once (a layer of its own,
    # so the alias normalisation reads a column instead of repeating the unescaping)
    strings = [n for n in names if _reads(plan.props[n], "string", n)]
    raws = ",\n    ".join(f"{_raw_string(n)} AS r_{n}" for n in strings) or "NULL AS r_none"
    values = ",\n    ".join(
        [f"{_string_value(n, plan.props[n])} AS s_{n}" for n in strings]
        + [
            f"CASE WHEN {_kind(n, 'number')} THEN try_cast(x_{n} AS DOUBLE) END AS n_{n}"
            for n in names
            if _reads(plan.props[n], "number", n)
        ]
    )
    checks = " AND ".join(_field_sql(n, plan.props[n]) for n in names)
    # No key twice: as many keys as schema fields found proves it without building a set (the
    # usual line); only a line with other keys too has its keys' set built (a CASE, not an OR,
    # so that DuckDB evaluates it for those lines alone). A key count, not the key list, travels
    # through the layers: a list column costs more than the whole check.
    found = " + ".join(f"(x_{n} IS NOT NULL)::INTEGER" for n in names)
    distinct = (
        f"(CASE WHEN n_keys IS NULL THEN false WHEN n_keys = {found} THEN true "  # NULL: not JSON, not parsed
        "ELSE len(list_distinct(json_keys(line))) = n_keys END)"
    )

    def value(name: str, kind: str) -> str:
        if name not in plan.props:
            return f"NULL::{kind}"
        return f"n_{name}" if kind == "DOUBLE" else f"s_{name}"

    ts = f"coalesce(epoch_us(try_cast(s_timestamp AS TIMESTAMPTZ)), {_EPOCH_US})"

    def sql(good: str, *, scan: bool = False) -> str:
        # scan: `lines(line)` has no index (rows keep file order, the table's rowid is the index)
        # and the text of each line not accepted comes out, for the exact validator
        i = "" if scan else "i, "
        return f"""
WITH parsed AS (
  SELECT {i}{good} AS good, line FROM lines
), extracted AS (
  SELECT {i}good, CASE WHEN good THEN json_extract(line, [{paths}])::VARCHAR[] END AS v,
    CASE WHEN good THEN len(json_keys(line)) END AS n_keys, line FROM parsed
), fields AS (
  SELECT {i}good, n_keys, line,
    {extract}
  FROM extracted
), raws AS (
  SELECT *,
    {raws}
  FROM fields
), valued AS (
  SELECT *,
    {values}
  FROM raws
), checked AS (
  SELECT {i}coalesce(good AND {checks} AND {distinct}, false) AS ok,{" line," if scan else ""}
    {ts} AS ts_us,
    {value("level", "VARCHAR")} AS level,
    {value("service", "VARCHAR")} AS service,
    {value("user_id", "VARCHAR")} AS user_id,
    {value("response_time_ms", "DOUBLE")} AS response_time_ms
  FROM valued
)
SELECT {i}ok, ts, level, service, user_id, response_time_ms, late{", CASE WHEN NOT ok THEN line END AS line" if scan else ""}
FROM (
  SELECT {i}ok AND ts_us IS NOT NULL AND ts_us <= $now_us + $skew_us AS ok,
    make_timestamp(ts_us) AS ts, level, service, user_id, response_time_ms,
    coalesce(ts_us < $now_us - $late_us, false) AS late{", line" if scan else ""}
  FROM checked
)
"""

    lenient = f"NOT ({_LENIENT})"
    return CompiledChecks(sql(lenient), sql(f"json_valid(line) AND {lenient}"), sql(lenient, scan=True), names)
