"""Tokenising and masking of universal value shapes for the template miner.

A message is split on whitespace and every token is classified once (results are
cached per distinct token, so the hot path is a C-level ``map`` over dict lookups).
Only shapes that are variable in *any* log are masked:

* numbers (``42``, ``-3.5``, ``1,024``, ``2.4.1``), numbers with a unit (``35ms`` or
  ``35 ms`` -> ``<DUR>``, ``12KB`` or ``12 KB`` -> ``<SIZE>``, ``80%`` -> ``<NUM>``);
* IPv4 (optionally ``:port``), IPv6, MAC addresses, UUIDs;
* ``0x`` hex and long hex strings containing a digit (hashes, ids);
* dates and times of day (``2024-01-02``, ``2024-01-02T03:04:05Z``, ``12:34:56,789``);
* paths (``/var/lib/x``, ``C:\\Temp\\x``) and URLs (``https://...``).
* host names that end in a generic top-level domain (``db.example.com``), or in a country
  code after a generic second level (``proxy.cse.edu.hk``) or with a digit or hyphen in a label
  (``195-154-37-122.rev.example.eu``), optionally with ``:port``. Dotted names that end
  otherwise (``org.apache.hadoop.Server``, ``mapred.task.id``, ``setup.py``) are not hosts.

The same quantity given again in parentheses right after a value (``1190 bytes (1.16 KB)``,
``10.0.0.1 (db.example.com)``, or an empty ``()``) folds into that value (`fold_alternatives`),
so a line with the optional second rendering has the tokens of a line without it.

Within a token the shape is matched on its *core*: leading ``([{<"'`` and trailing
``)]}>"',;:.!?`` are kept as they are (``(12.8`` -> ``(<NUM>``). A token that is not
one shape as a whole keeps its text, but digit runs and hex runs between delimiters
(``, = : ; ( ) [ ] { } < > " ' _ | @ # . / -``) are masked (``size=42,`` ->
``size=<NUM>,``, ``db.internal:5432`` -> ``db.internal:<NUM>``, ``blk_-42`` -> ``blk_<NUM>``,
``core.2275`` -> ``core.<NUM>``, ``deny(1)`` -> ``deny(<NUM>)``), and the value after
``key=`` (else ``key:`` or ``call(``) may be any shape as a whole (``ip=<IP>``).

Nothing else is decided from the look of a token: digits glued to letters (``IPV4``,
``ssh2``, ``u0``) and words stay as they are, and the miner decides from the data
whether their position is constant or variable.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "PLACEHOLDERS",
    "ZERO_DIGITS",
    "TokenMasker",
    "classify",
    "fold_alternatives",
    "has_placeholder",
    "is_value",
    "join_units",
    "mask",
    "same_key_value",
    "tokenize",
]

PLACEHOLDERS: Final = (
    "<NUM>",
    "<DUR>",
    "<SIZE>",
    "<IP>",
    "<MAC>",
    "<UUID>",
    "<HEX>",
    "<DATE>",
    "<TIME>",
    "<PATH>",
    "<URL>",
    "<HOST>",
)

_LEAD: Final = "([{<\"'"
_TRAIL: Final = ")]}>\"',;:.!?"
_HEX4 = r"[0-9a-fA-F]{1,4}"
# Shapes depend on where digits are, never on their values (the miner caches by digit skeleton).
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
# A DNS name, judged by its end only (so Java names such as `org.apache.hadoop.Server` are not
# hosts): letter-digit-hyphen labels ending in a generic top-level domain (`db.example.com`), or
# in a country code after a generic second level (`proxy.cse.edu.hk`, `x.co.uk`), or after two
# dots when a label has a digit or a hyphen (`195-154-37-122.rev.example.eu`). A bare country
# code is not enough: `mapred.task.id` and `setup.py` are names, not hosts.
_LABEL = r"[A-Za-z0-9-]+"  # not DNS-strict: a simple class keeps the match linear
_GENERIC_TLDS = "com|net|org|edu|gov|mil|int|info|biz"
# At most 253 characters (DNS's limit) plus a port: the lookahead bounds the work on a hostile
# 60,000-character dotted token to a few hundred steps.
_HOST = (
    r"(?=[A-Za-z0-9.:-]{4,259}(?![A-Za-z0-9.:-]))"
    rf"(?:(?:{_LABEL}\.)+(?:{_GENERIC_TLDS}|co|ac)(?:(?<=co|ac)\.[a-z]{{2}}|(?<!co|ac)(?:\.[a-z]{{2}})?)"
    rf"|(?=[A-Za-z0-9.]*[0-9-])(?:{_LABEL}\.){{2,}}[a-z]{{2}})(?::\d{{1,5}})?"
)

# One alternation, matched once per distinct token core; the group name is the placeholder.
_SHAPES: Final = re.compile(
    "|".join(
        (
            r"(?P<DUR>[-+]?\d+(?:\.\d+)?(?:ns|us|µs|ms|msecs?|millis|s|secs?|seconds|mins?|minutes|h|hrs|hours))",
            r"(?P<SIZE>\d+(?:\.\d+)?(?:[KMGTPE]i?B|[kKMGTPE]b?|B|bytes))",
            rf"(?P<IP>{_V4}(?::\d{{1,5}})?|\[?(?:(?:{_HEX4}:){{7}}{_HEX4}|(?:{_HEX4}:){{1,7}}:(?:(?:{_HEX4}:){{0,5}}"
            rf"(?:{_V4}|{_HEX4}))?|::(?:{_HEX4}:){{0,5}}(?:{_V4}|{_HEX4}))(?:%[\w.]+)?\]?(?::\d{{1,5}})?)",
            r"(?P<NUM>[-+]?(?:\d+(?:[.,]\d+)*|\.\d+)(?:[eE][-+]?\d+)?%?)",
            r"(?P<MAC>(?:[0-9a-fA-F]{2}[:-]){5,}[0-9a-fA-F]{2})",
            r"(?P<UUID>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})",
            r"(?P<HEX>0[xX][0-9a-fA-F]+|(?=[a-fA-F]*\d)[0-9a-fA-F]{8,})",
            r"(?P<DATE>\d{4}-\d{1,2}-\d{1,2}(?:[T_ ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
            r"|\d{1,4}/\d{1,2}/\d{1,4}(?:[:-]\d{1,2}:\d{2}(?::\d{2})?)?)",
            r"(?P<TIME>\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,9})?)",
            r"(?P<URL>[A-Za-z][A-Za-z0-9+.-]*://\S+)",
            rf"(?P<HOST>{_HOST})",
            r"(?P<PATH>(?:~|\.{1,2})?/[^\s/\"'?()\[\]{}<>,;=]+(?:/[^\s/\"'?()\[\]{}<>,;=]*)*(?:\?\S*)?"
            r"|[A-Za-z]:\\\S*)",
        )
    )
)
# Inside a token that is not one shape as a whole, pieces between these delimiters are classified
# on their own (``lock=12,`` -> ``lock=<NUM>,``, ``blk_-42`` -> ``blk_<NUM>``); no piece is guessed at.
_DELIMS = r",=:;()\[\]{}<>\"'_|@#./-"
_HEX_PIECE: Final = re.compile(
    rf"(?<![^{_DELIMS}])(?:0[xX][0-9a-fA-F]+|(?=\d*[a-fA-F])(?=[a-fA-F]*\d)[0-9a-fA-F]{{8,}})(?![^{_DELIMS}])"
)
_WHOLE: Final = re.compile(
    "[" + re.escape(_LEAD) + "]*(?:" + _SHAPES.pattern + ")(?=[" + re.escape(_TRAIL) + "]*\\Z)"
).match
_WHOLE_HOST: Final = re.compile("[" + re.escape(_LEAD) + "]*(" + _HOST + ")(?=[" + re.escape(_TRAIL) + "]*\\Z)").match
_KEY_SEP: Final = re.compile(r"[:(]").search
_NUM_PIECE: Final = re.compile(rf"(?<![^{_DELIMS}])[-+]?\d+(?![^{_DELIMS}])")
_UNITS: Final = {
    **dict.fromkeys(("B", "KB", "MB", "GB", "TB", "PB", "KiB", "MiB", "GiB", "TiB", "kB", "bytes"), "<SIZE>"),
    **dict.fromkeys(
        ("ns", "us", "µs", "ms", "msec", "msecs", "millis", "s", "sec", "secs", "seconds", "min", "mins", "minutes"),
        "<DUR>",
    ),
}
_CALENDAR: Final = frozenset(
    (
        *("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
        *("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
        *("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        *("January", "February", "March", "April", "June", "July", "August", "September"),
        *("October", "November", "December"),
    )
)
_DATE_PARTS: Final = ("<NUM>", "<TIME>", "<DATE>")
_CALENDAR_NEXT: Final = frozenset(_DATE_PARTS) | _CALENDAR
UNIT_MARK: Final = "\x01"
"""Prefix of a unit word (``KB``, ``ms``) or calendar name (``Aug``) whose neighbours decide its mask."""


def _classify_core(core: str) -> str:
    """The placeholder for a whole-token shape, or `core` unchanged."""
    first = core[0]
    if first in _NO_SHAPE_START and "://" not in core and not core.startswith(_DRIVE, 1) and "." not in core:
        return core  # every shape but a host name starts with a digit, sign, dot, slash, bracket, hex letter or ~
    m = _SHAPES.fullmatch(core)
    if m is not None:
        return "<" + str(m.lastgroup) + ">"
    return core


_NO_SHAPE_START: Final = frozenset("ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ_")
_DRIVE: Final = ":\\"


ZERO_DIGITS: Final = bytes.maketrans(b"123456789", b"000000000")
"""Byte table mapping every ASCII digit to 0: the digit skeleton of a UTF-8 string."""
_DIGIT: Final = re.compile(r"\d").search

_has_signal = re.compile(r"[\d/\\]").search
"""Whether a token could hold a maskable shape (a digit, a path or URL slash, a backslash)."""


def classify(token: str) -> str:
    """Mask one whitespace-delimited token (see the module docstring)."""
    if token.isdigit():
        return "<NUM>"
    if _has_signal(token) is None:
        return _plain(token)
    return _classify_signal(token)


def _plain(token: str) -> str:
    """A token without digits or slashes: only a unit or calendar word is marked for its neighbours."""
    if "<*" in token:
        return token.replace("<*", "<\\*")  # a literal "<*>" in a log must not act as a wildcard
    if "." in token:
        m = _WHOLE_HOST(token)
        if m is not None:
            return token[: m.start(1)] + "<HOST>" + token[m.end(1) :]
    core = token.rstrip(_TRAIL)
    return UNIT_MARK + token if core in _UNITS or core in _CALENDAR else token


def _classify_signal(token: str) -> str:
    """`classify` for a token known to hold a digit, slash or backslash."""
    # One match for lead punctuation + a whole shape + trail punctuation (``(12.8``, ``0x1f,``).
    m = _WHOLE(token)
    if m is not None:
        kind = str(m.lastgroup)
        return token[: m.start(kind)] + "<" + kind + ">" + token[m.end() :]
    if "://" in token:
        return token
    eq = token.find("=", 1)
    if eq < 0:
        sep = _KEY_SEP(token, 1)
        eq = -1 if sep is None else sep.start()
    if 0 < eq < len(token) - 1:
        # key=value (else key:value, call(value): the value may be any shape as a whole (an IP, a path).
        value = token[eq + 1 :]
        vcore = value.lstrip(_LEAD)
        vstripped = vcore.rstrip(_TRAIL)
        if vstripped:
            vmasked = _classify_core(vstripped)
            if vmasked is not vstripped:
                lead_v = value[: len(value) - len(vcore)]
                return _pieces(token[: eq + 1]) + lead_v + vmasked + vcore[len(vstripped) :]
    return _pieces(token)


def _pieces(text: str) -> str:
    """Mask hex pieces and digit runs between delimiters (one substitution each)."""
    if len(text) >= 8 or "0x" in text or "0X" in text:  # a hex piece needs 8 digits or 0x
        text = _HEX_PIECE.sub("<HEX>", text)
    return _NUM_PIECE.sub("<NUM>", text)


def join_units(tokens: list[str]) -> list[str]:
    """Resolve marked words: a unit after a number folds into it (``<NUM> KB`` -> ``<SIZE>``), a
    month or weekday next to a number or time is part of a date (``Thu Aug 4 12:00:00`` ->
    ``<DATE> <DATE> <NUM> <TIME>``); any other marked word is left as it was."""
    out: list[str] = []
    n = len(tokens)
    for i, tok in enumerate(tokens):
        if tok.startswith(UNIT_MARK):
            word = tok[1:]
            core = word.rstrip(_TRAIL)
            prev = out[-1] if out else ""
            if core in _UNITS and prev.endswith("<NUM>"):
                out[-1] = prev[:-5] + _UNITS[core] + word[len(core) :]
                continue
            if core in _CALENDAR:
                after = tokens[i + 1] if i + 1 < n else ""
                if prev.endswith(_DATE_PARTS) or after.lstrip(UNIT_MARK).rstrip(",;.") in _CALENDAR_NEXT:
                    out.append("<DATE>" + word[len(core) :])
                    continue
            tok = word
        out.append(tok)
    return out


_VALUES: Final = frozenset(PLACEHOLDERS)
_ALTERNATIVE: Final = re.compile(r"\((<[A-Z]+>)?\)([,;:.!?]*)")


# Placeholders that can render one quantity twice: a size in bytes and in KB, an address and its name.
_KIN: Final = {"<SIZE>": "size", "<DUR>": "time", "<IP>": "host", "<HOST>": "host", "<NUM>": "num", "<HEX>": "num"}


def _same_quantity(value: str, again: str | None) -> bool:
    """Whether `again` (a placeholder in parentheses, None for an empty pair) can be the value
    that token `value` ends with, rendered again."""
    kind = next((_KIN.get(p) for p in PLACEHOLDERS if value.endswith(p)), None)
    if kind is None:
        return False
    return again is None or _KIN.get(again) == kind


def fold_alternatives(tokens: list[str]) -> list[str]:
    """Fold the same quantity given again in parentheses into the value before it
    (``1190 bytes (1.16 KB)`` -> ``<SIZE>``, ``3 MB (3145728 bytes),`` -> ``<SIZE>,``;
    ``<IP> (<HOST>)`` and ``<IP> ()`` -> ``<IP>``): the second rendering is optional or empty in
    many logs, and a line with it is the same event as a line without. Another quantity stays
    (``200 ms (80%)``)."""
    out: list[str] = []
    for tok in tokens:
        if tok.startswith(("(<", "()")) and out and out[-1].endswith(">"):
            m = _ALTERNATIVE.fullmatch(tok)
            if m is not None and _same_quantity(out[-1], m.group(1)):
                out[-1] += m.group(2)
                continue
        out.append(tok)
    return out


def has_placeholder(token: str) -> bool:
    """Whether a masked token carries a placeholder somewhere (``size=<NUM>,``)."""
    return "<" in token and any(p in token for p in PLACEHOLDERS)


_KEY: Final = re.compile(r"[^=:(]*[=:(]+")


def same_key_value(a: str, b: str) -> bool:
    """Whether `a` and `b` are ``key=value`` / ``key:value`` with one key and a masked value on one side."""
    ka, kb = _KEY.match(a), _KEY.match(b)
    if ka is None or kb is None or ka.group() != kb.group():
        return False
    return has_placeholder(a[ka.end() :]) or has_placeholder(b[kb.end() :])


def is_value(token: str) -> bool:
    """Whether a masked token is a placeholder, give or take surrounding punctuation (``(<SIZE>),``)."""
    return token.lstrip(_VALUE_LEAD).rstrip(_VALUE_TRAIL) in _VALUES


# Punctuation around a placeholder, without its own angle brackets (a bare word "IP" is no value).
_VALUE_LEAD: Final = _LEAD.replace("<", "")
_VALUE_TRAIL: Final = _TRAIL.replace(">", "")


class _TokenCache(dict[str, str]):
    """Token -> mask; a miss is classified (or answered by its digit skeleton) and remembered."""

    __slots__ = ("by_skeleton",)

    def __init__(self) -> None:
        super().__init__()
        # Shapes depend on where digits are, not on their values: a token whose mask keeps no
        # digit answers every token with the same digit skeleton (core.4505 ~ core.2790).
        self.by_skeleton: dict[bytes, str] = {}

    def __missing__(self, tok: str) -> str:
        if tok.isdigit():
            self[tok] = "<NUM>"
            return "<NUM>"
        if _has_signal(tok) is None:
            plain = self[tok] = _plain(tok)
            return plain
        skeleton = tok.encode("utf-8", "surrogatepass").translate(ZERO_DIGITS)
        known = self.by_skeleton.get(skeleton)
        if known is None:
            known = _classify_signal(tok)
            if _DIGIT(known) is None:
                self.by_skeleton[skeleton] = known
        self[tok] = known
        return known


class TokenMasker:
    """Whitespace tokeniser + masker with a bounded per-token cache (not thread-safe on its own)."""

    __slots__ = ("_cache", "_limit")

    def __init__(self, limit: int = 200_000) -> None:
        self._cache = _TokenCache()
        self._limit = limit

    def tokens(self, message: str) -> list[str]:
        """The masked tokens of `message`."""
        return self.split(message)[0]

    def split(self, message: str) -> tuple[list[str], str]:
        """The masked tokens of `message` and the same joined by single spaces."""
        cache = self._cache
        if len(cache) > self._limit:
            cache.clear()
            cache.by_skeleton.clear()
        # A C-level map over dict lookups; only unseen tokens reach Python (__missing__).
        out = list(map(cache.__getitem__, message.split()))
        key = " ".join(out)
        if UNIT_MARK in key:
            out = join_units(out)
            key = " ".join(out)
        if "> (<" in key or "> ()" in key:  # a value, then a parenthesised value or an empty pair
            folded = fold_alternatives(out)
            if len(folded) != len(out):
                out, key = folded, " ".join(folded)
        return out, key


_DEFAULT = TokenMasker()


def tokenize(message: str) -> list[str]:
    """The masked tokens of `message` (whitespace split, universal shapes masked)."""
    return _DEFAULT.tokens(message)


def mask(message: str) -> str:
    """`message` with universal variable shapes masked, tokens joined by single spaces.

    >>> mask("connect to 10.0.0.1:8080 took 35ms id=0xdeadbeef")
    'connect to <IP> took <DUR> id=<HEX>'
    """
    return " ".join(_DEFAULT.tokens(message))
