"""Online log template mining that decides variable positions from the data.

`TemplateMiner` turns free-text log messages into templates such as
``session opened for user <*>`` and gives every template a short id that survives
`save` / `load`. It is one pass over the stream with bounded memory:

1. **Masking** (`loglens.detect.masking`): whitespace tokens whose value has a universal
   variable shape (numbers, IPs, hex, UUIDs, dates, times, paths, URLs) become
   placeholders (``<NUM>``, ``<IP>``...), and so do number pieces between delimiters
   inside a token (``blk_<NUM>``, ``core.<NUM>``). Nothing else is judged by its look:
   ``IPV4``, ``ssh2`` or ``deny`` are left to the data.
2. **Exact matching**: a message joins the most specific live template of its token
   count whose constants it repeats exactly (``<*>`` matches anything), or a
   variable-length template whose prefix and suffix it repeats. Messages with the same
   digit skeleton (digits turned into 0) and identical masked token sequences are
   answered from bounded caches.
3. **A new template** is created for a message nobody matches, and then the data
   decide whether it is a new *event* or a new *value* of a known event. Templates of
   the same length that agree everywhere except at a few positions P (at most a third)
   are *siblings*. P is variable, and the siblings merge into one template with ``<*>``
   at P, when for each position of P

   - one side holds a masked value (``<IP>`` against ``db.internal:<NUM>``), or the same
     ``key=`` with a masked value on one side: evidence of a variable position; or
   - every word there is a *known value* (one an earlier merge absorbed into a ``<*>``);
   - or the siblings show at least `min_values` distinct values there, rarely repeated
     (on average at most `max_repeat` lines per value), or twice as many distinct values
     however often each recurs. A plain-word variable (user names) keeps producing new
     values; a small set of words repeated many times (``GET``/``POST``,
     ``IPV4``/``IPV6``, ``deny(1) file-read``/``network``) is a set of different events
     and stays split. With a single constant left the counts double (``<*> called``
     needs more evidence than ``session opened for <*>``).

   Templates whose lengths differ merge into a variable-length template
   (``<SIZE> <*> sent``) when they share both ends, the shorter leaves at most one token
   in the differing middle, and that middle holds only masked values (an optional
   ``(12.8 KB)``), repeats the masked token before it (a list of ids), sits next to a
   ``<*>`` (a value of varying token count, unless the middle holds words that a template has
   seen on several of its lines: those belong to its event), or shows the evidence above.
4. **Stable ids**: a template's id is a 12-hex-digit BLAKE2b hash of its first text,
   deterministic across runs. A merge keeps the oldest sibling's id; the other ids
   become aliases of it, so an id once returned keeps naming the template that
   absorbed it (`resolve`). Merges are never undone, so an alias never changes target.
5. **Bounded memory**: at most `max_clusters` live templates (least recently used
   ones are evicted with their aliases); the caches are cleared when full.

One configuration serves every log source; ``docs/benchmarks_templates.md`` has the
accuracy on the loghub sets under a develop-on-half / test-on-the-other-half
protocol (``python bench/templates.py``). A lock guards the miner, so one
instance may be shared between threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from loglens.detect.masking import (
    PLACEHOLDERS,
    ZERO_DIGITS,
    TokenMasker,
    has_placeholder,
    is_value,
    mask,
    same_key_value,
    tokenize,
)
from loglens.errors import LoglensError

__all__ = [
    "DEFAULT_MAX_CLUSTERS",
    "DEFAULT_MAX_REPEAT",
    "DEFAULT_MIN_VALUES",
    "PLACEHOLDERS",
    "MatchResult",
    "TemplateMiner",
    "TemplateStateError",
    "grouping_accuracy",
    "mask",
    "tokenize",
]

DEFAULT_MAX_CLUSTERS = 10_000
"""Live templates kept before the least recently used ones are evicted."""
DEFAULT_MIN_VALUES = 6
"""Distinct plain values a position must show before it can be judged variable."""
DEFAULT_MAX_REPEAT = 2.0
"""A position is variable only if its values average at most this many lines each."""

WILD = "<*>"
"""A variable position of fixed width (one token)."""
_GAP = "<*...>"
"""Internal marker of a variable-length gap (rendered as ``<*>``)."""

_CACHE_LIMIT = 100_000
_K = TypeVar("_K")
_INDEX_FROM = 64
"""Templates of one length from which sibling search uses the block index instead of a scan."""
_has_digit = re.compile(r"\d").search
STATE_FORMAT = "loglens.template-miner"
STATE_VERSION = 3
"""Bumped whenever masking changes what a message's tokens are (3: host names, second renderings
in parentheses): templates learnt under other tokens would no longer match, so an older state is
refused and the pattern worker relearns, with its warm-up, instead of calling known events new."""


class TemplateStateError(LoglensError, ValueError):
    """A saved template-miner state file is not valid JSON of the expected shape."""


@dataclass(slots=True)
class MatchResult:
    """The outcome of adding one message.

    `template_id` is stable for the template's lifetime (also across `save`/`load`),
    `template` is the template after this message was merged into it, `is_new` is
    True when the message started a new template and `count` is the number of
    messages the template has absorbed so far. Treat it as read-only (it is not frozen
    because a frozen dataclass costs four times as much to build, once per line).
    """

    template_id: str
    template: str
    is_new: bool
    count: int


class _Template:
    """One template: tokens with `WILD` at variable positions (or one `_GAP` when variable-length)."""

    __slots__ = (
        "aliases",
        "count",
        "created",
        "head",
        "merged_into",
        "nconst",
        "tail",
        "text",
        "tid",
        "tokens",
        "used",
    )

    def __init__(self, tid: str, tokens: list[str], count: int, created: int) -> None:
        self.tid = tid
        self.count = count
        self.created = created
        self.used = created
        self.merged_into: _Template | None = None
        self.aliases: list[str] = []
        self.tokens: list[str] = []
        self.head: list[str] = []
        self.tail: list[str] = []
        self.nconst = 0
        self.text = ""
        self.set_tokens(tokens)

    def set_tokens(self, tokens: list[str]) -> None:
        self.tokens = tokens
        gaps = tokens.count(_GAP)
        self.nconst = len(tokens) - tokens.count(WILD) - gaps
        self.text = " ".join(tokens)
        if gaps:
            i = tokens.index(_GAP)
            self.head, self.tail = tokens[:i], tokens[i + 1 :]
            self.text = self.text.replace(_GAP, WILD)

    @property
    def varlen(self) -> bool:
        return _GAP in self.tokens

    def live(self) -> _Template:
        """The template this one merged into, transitively (itself if it is live)."""
        t = self
        while t.merged_into is not None:
            t = t.merged_into
        u = self
        while u.merged_into is not None and u.merged_into is not t:  # shorten the chain for next time
            u.merged_into, u = t, u.merged_into
        return t


_NO_WILDS: frozenset[int] = frozenset()


def _wilds(tokens: list[str]) -> frozenset[int]:
    """The positions of ``<*>`` in `tokens`."""
    if WILD not in tokens:  # a fresh template: one C-level scan
        return _NO_WILDS
    return frozenset(p for p, x in enumerate(tokens) if x == WILD)


def max_diff(n: int) -> int:
    """How many positions of an `n`-token template may differ from a sibling."""
    return max(1, n // 3)


class _Bucket:
    """Fixed-length templates of one token count, indexed for exact matching and sibling search.

    Matching: templates are grouped by their set of ``<*>`` positions, and within a group keyed
    by their constants, so a line is matched with one dict lookup per group. Sibling search uses
    the pigeonhole principle: cut the positions into ``max_diff(n) + 1`` blocks; a template that
    differs from a line in at most `max_diff` positions agrees with it on all of some block.
    Templates are indexed by the tokens of each block, apart per set of ``<*>`` positions (a
    ``<*>`` agrees with anything, so it is left out).
    """

    __slots__ = ("blocks", "by_wilds", "ends", "exact", "indexed", "templates")

    def __init__(self, n: int, ends: _Ends) -> None:
        self.templates: dict[int, _Template] = {}
        # <*> positions -> (getter of the other positions, constants -> templates), most constants first
        self.exact: dict[frozenset[int], tuple[Callable[[Sequence[str]], Any], dict[Any, list[_Template]]]] = {}
        self.ends = ends
        k = max_diff(n) + 1
        # Fewer positions than blocks (one-token lines): no index, every template is a candidate.
        self.blocks: list[range] = [range(i * n // k, (i + 1) * n // k) for i in range(k)] if n >= k else []
        self.by_wilds: dict[frozenset[int], list[dict[tuple[str, ...], list[_Template]]]] = {}
        self.indexed = False

    def find(self, toks: Sequence[str]) -> _Template | None:
        """The template with the most constants that `toks` repeats exactly, or None."""
        best: _Template | None = None
        for getter, index in self.exact.values():
            found = index.get(getter(toks))
            if found is not None:
                t = found[0]
                if best is None or t.nconst > best.nconst:
                    best = t
        return best

    def _exact_slot(self, t: _Template) -> tuple[frozenset[int], Any]:
        wilds = _wilds(t.tokens)
        slot = self.exact.get(wilds)
        if slot is None:
            keep = [p for p in range(len(t.tokens)) if p not in wilds]
            getter = _key_getter(keep)
            slot = self.exact[wilds] = (getter, {})
        return wilds, slot[0](t.tokens)

    def _block_keys(self, tokens: Sequence[str], wilds: frozenset[int]) -> list[tuple[str, ...]]:
        return [tuple(tokens[p] for p in block if p not in wilds) for block in self.blocks]

    def add(self, t: _Template) -> None:
        self.templates[id(t)] = t
        wilds, key = self._exact_slot(t)
        self.exact[wilds][1].setdefault(key, []).append(t)
        self.ends.add(t)
        if self.indexed:
            self._index(t)
        elif self.blocks and len(self.templates) >= _INDEX_FROM:
            self.indexed = True  # from now on (a scan is cheaper while the bucket is small)
            for u in self.templates.values():
                self._index(u)

    def _index(self, t: _Template) -> None:
        wilds = _wilds(t.tokens)
        index = self.by_wilds.setdefault(wilds, [{} for _ in self.blocks])
        for b, key in enumerate(self._block_keys(t.tokens, wilds)):
            index[b].setdefault(key, []).append(t)

    def remove(self, t: _Template) -> None:
        del self.templates[id(t)]
        wilds, key = self._exact_slot(t)
        _drop(self.exact[wilds][1], key, t)
        if not self.exact[wilds][1]:
            del self.exact[wilds]
        self.ends.remove(t)
        if self.indexed:
            wilds = _wilds(t.tokens)
            index = self.by_wilds[wilds]
            for b, key in enumerate(self._block_keys(t.tokens, wilds)):
                _drop(index[b], key, t)
            if not any(index):
                del self.by_wilds[wilds]

    def sibling_candidates(self, tokens: Sequence[str]) -> Iterable[_Template]:
        """Every template that may differ from `tokens` in at most ``max_diff(n)`` positions (and more)."""
        if not self.indexed:
            return self.templates.values()
        found: dict[int, _Template] = {}
        for wilds, index in self.by_wilds.items():
            for b, key in enumerate(self._block_keys(tokens, wilds)):
                for u in index[b].get(key, ()):
                    found[id(u)] = u
        return found.values()


def _key_getter(keep: list[int]) -> Callable[[Sequence[str]], Any]:
    """A function picking the tokens at `keep` (a C-level itemgetter when there are two or more)."""
    if len(keep) > 1:
        return operator.itemgetter(*keep)

    def pick(toks: Sequence[str]) -> tuple[str, ...]:
        return tuple(toks[p] for p in keep)

    return pick


class _Ends:
    """Fixed-length templates of every length by first and by last token (``<*>`` included)."""

    __slots__ = ("first", "last")

    def __init__(self) -> None:
        self.first: dict[str, list[_Template]] = {}
        self.last: dict[str, list[_Template]] = {}

    def add(self, t: _Template) -> None:
        if t.tokens:
            self.first.setdefault(t.tokens[0], []).append(t)
            self.last.setdefault(t.tokens[-1], []).append(t)

    def remove(self, t: _Template) -> None:
        if t.tokens:
            _drop(self.first, t.tokens[0], t)
            _drop(self.last, t.tokens[-1], t)

    def sharing_both_ends(self, first: str, last: str) -> list[_Template]:
        """Templates whose first token is `first` or ``<*>`` and whose last token is `last` or ``<*>``."""
        return [
            u
            for group in (self.first.get(first, ()), self.first.get(WILD, ()))
            for u in group
            if u.tokens[-1] == last or u.tokens[-1] == WILD
        ]


def _drop(index: dict[_K, list[_Template]], key: _K, t: _Template) -> None:
    lst = index[key]
    lst.remove(t)
    if not lst:
        del index[key]


def _matches(tokens: Sequence[str], toks: Sequence[str]) -> bool:
    # A plain loop: the hot path, and twice as fast as all() over a generator.
    for a, b in zip(tokens, toks, strict=True):  # noqa: SIM110
        if a != b and a != WILD:
            return False
    return True


def _matches_varlen(t: _Template, toks: Sequence[str]) -> bool:
    head, tail = t.head, t.tail
    n = len(toks)
    if n < len(head) + len(tail):
        return False
    return _matches(head, toks[: len(head)]) and _matches(tail, toks[n - len(tail) :])


def _gap(
    utoks: Sequence[str],
    toks: Sequence[str],
    max_a: int | None = None,
    max_b: int | None = None,
    *,
    settled: bool = False,
) -> tuple[tuple[tuple[str, ...], tuple[str, ...]], bool] | None:
    """((prefix, suffix), middle is a value) when `toks` and `utoks` differ in one middle part.

    The prefix and suffix are taken from `utoks` (so its ``<*>`` stay), at most `max_a` and
    `max_b` tokens long (the head and tail of a variable-length template); the shorter sequence may
    leave at most one token in the middle. The middle is a value when it holds only masked values
    and ``<*>`` (an optional ``(12.8 KB)``, a list of ids), or when it sits inside the template next
    to a ``<*>`` (a value that sometimes spans more tokens) unless `utoks` is `settled` (it has
    seen its constants on several lines) and has a constant in the middle (``invalid user`` in
    ``Failed password for invalid user <*>`` belongs to that event, not to the value), or when it
    repeats the masked token before it (a list of ids). Otherwise prefix and suffix must
    cover two thirds of the longer sequence for the pair to count at all.
    """
    n, m = len(toks), len(utoks)
    limit = min(n, m)
    a = 0
    stop_a = limit if max_a is None else min(limit, max_a)
    while a < stop_a and (utoks[a] == toks[a] or utoks[a] == WILD):
        a += 1
    b = 0
    stop_b = limit - a if max_b is None else min(limit - a, max_b)
    while b < stop_b and (utoks[m - 1 - b] == toks[n - 1 - b] or utoks[m - 1 - b] == WILD):
        b += 1
    if limit - a - b > 1:
        return None
    head, tail = tuple(utoks[:a]), tuple(utoks[m - b :])
    constants = sum(1 for x in (*head, *tail) if x != WILD)
    if constants == 0:
        return None
    middle = (*toks[a : n - b], *utoks[a : m - b])
    if all(x == WILD or is_value(x) for x in middle):
        return (head, tail), True
    if head and has_placeholder(head[-1]) and all(x == head[-1] for x in middle):
        return (head, tail), True  # a list: more of the value just before the gap (blk_<NUM> blk_<NUM>)
    if head and tail and WILD in (head[-1], tail[0]) and not (settled and any(x != WILD for x in utoks[a : m - b])):
        return (head, tail), True
    if 3 * constants < 2 * max(n, m):
        return None
    return (head, tail), False


def _stable_id(text: str, salt: int) -> str:
    data = text if salt == 0 else f"{text}\x00{salt}"
    return hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


def _check_params(max_clusters: int | None, min_values: int, max_repeat: float) -> None:
    if max_clusters is not None and (
        isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1
    ):
        raise ValueError(f"max_clusters must be a positive int or None, got {max_clusters!r}")
    if isinstance(min_values, bool) or not isinstance(min_values, int) or min_values < 2:
        raise ValueError(f"min_values must be an int >= 2, got {min_values!r}")
    if not max_repeat >= 1.0:
        raise ValueError(f"max_repeat must be >= 1, got {max_repeat!r}")


class TemplateMiner:
    """Online log template miner with data-driven variable positions; see the module docstring.

    >>> miner = TemplateMiner()
    >>> miner.add("user 17 logged in from 10.0.0.1").template
    'user <NUM> logged in from <IP>'
    >>> r = miner.add("user 42 logged in from 10.0.0.9")
    >>> (r.is_new, r.count)
    (False, 2)
    """

    def __init__(
        self,
        max_clusters: int | None = DEFAULT_MAX_CLUSTERS,
        *,
        min_values: int = DEFAULT_MIN_VALUES,
        max_repeat: float = DEFAULT_MAX_REPEAT,
    ) -> None:
        _check_params(max_clusters, min_values, max_repeat)
        self.max_clusters = max_clusters
        self.min_values = min_values
        self.max_repeat = float(max_repeat)
        self._masker = TokenMasker()
        self._lock = threading.RLock()
        self._ends = _Ends()
        self._buckets: dict[int, _Bucket] = {}
        self._varlen: list[_Template] = []
        self._by_id: dict[str, _Template] = {}  # live and alias ids -> template object
        self._live = 0
        self._seq = 0
        self._by_skeleton: dict[bytes, _Template] = {}
        self._values: dict[str, None] = {}  # words that merges showed to be values of a variable
        self._by_tokens: dict[str, _Template] = {}

    # -- mining

    def mask(self, message: str) -> str:
        """The message with universal variable shapes replaced by placeholders."""
        return " ".join(self._masker.tokens(message))

    def add(self, message: str) -> MatchResult:
        """Mine one message (text only, without timestamp/level header) and return its template."""
        with self._lock:
            return self._add(message)

    def add_many(self, messages: Iterable[str]) -> list[MatchResult]:
        """`add` for each message, in order."""
        out: list[MatchResult] = []
        append = out.append
        with self._lock:
            by_skeleton = self._by_skeleton
            slow = self._add
            for message in messages:
                # The common case inlined: a message whose digit skeleton was seen before.
                skeleton = message.encode("utf-8", "surrogatepass").translate(ZERO_DIGITS)
                t = by_skeleton.get(skeleton)
                if t is not None and t.merged_into is None and t.count > 0:
                    self._seq += 1
                    t.count += 1
                    t.used = self._seq
                    append(MatchResult(t.tid, t.text, False, t.count))
                else:
                    append(slow(message, skeleton))
        return out

    def resolve(self, template_id: str) -> str | None:
        """The id of the live template that `template_id` names now (itself, or the template it
        merged into); None if the id is unknown or was evicted."""
        with self._lock:
            t = self._by_id.get(template_id)
            return None if t is None else t.live().tid

    def match(self, message: str) -> MatchResult | None:
        """The known template `message` belongs to, without learning from it; None if there is none."""
        with self._lock:
            toks = self._masker.tokens(message)
            t = self._find(toks)
            if t is None:
                return None
            return MatchResult(t.tid, t.text, False, t.count)

    def _add(self, message: str, skeleton: bytes | None = None) -> MatchResult:
        self._seq += 1
        # Masking depends on where digits are, not on their values, so a message whose masked
        # form keeps no digit is answered by its skeleton (digits -> 0) without masking again.
        # (bytes.translate is a 256-entry table lookup, twenty times faster than str.translate)
        if skeleton is None:
            skeleton = message.encode("utf-8", "surrogatepass").translate(ZERO_DIGITS)
        t = self._by_skeleton.get(skeleton)
        if t is not None and t.merged_into is not None:
            t = t.live()
        if t is None or t.count < 0:
            toks, key = self._masker.split(message)
            t = self._by_tokens.get(key)
            if t is not None and t.merged_into is not None:
                t = t.live()
            if t is None or t.count < 0:
                t = self._find(toks)
                if t is None:
                    result, t = self._create(toks)
                    self._remember(skeleton, key, t)
                    return result
            self._remember(skeleton, key, t)
        t.count += 1
        t.used = self._seq
        return MatchResult(t.tid, t.text, False, t.count)

    def _remember(self, skeleton: bytes, key: str, t: _Template) -> None:
        if len(self._by_tokens) >= _CACHE_LIMIT:
            self._by_tokens.clear()
        self._by_tokens[key] = t
        if _has_digit(key) is None:
            if len(self._by_skeleton) >= _CACHE_LIMIT:
                self._by_skeleton.clear()
            self._by_skeleton[skeleton] = t

    def _find(self, toks: list[str]) -> _Template | None:
        """The most specific live template `toks` matches exactly, or None."""
        best: _Template | None = None
        bucket = self._buckets.get(len(toks))
        if bucket is not None:
            best = bucket.find(toks)
        if best is None:
            for t in self._varlen:
                if (best is None or t.nconst > best.nconst) and _matches_varlen(t, toks):
                    best = t
        return best

    def _create(self, toks: list[str]) -> tuple[MatchResult, _Template]:
        text = " ".join(toks)
        salt = 0
        tid = _stable_id(text, salt)
        while tid in self._by_id:
            salt += 1
            tid = _stable_id(text, salt)
        t = _Template(tid, list(toks), 1, self._seq)
        self._by_id[tid] = t
        self._live += 1
        bucket = self._buckets.get(len(toks))
        if bucket is None:
            bucket = self._buckets[len(toks)] = _Bucket(len(toks), self._ends)
        bucket.add(t)
        target = self._merge_siblings(t, bucket) or self._merge_lengths(t, bucket)
        if self.max_clusters is not None and self._live > self.max_clusters:
            self._evict()
        if target is None:
            return MatchResult(t.tid, t.text, True, 1), t
        return MatchResult(target.tid, target.text, False, target.count), target

    # -- merging

    def _merge_siblings(self, t: _Template, bucket: _Bucket) -> _Template | None:
        """Merge `t` with same-length templates that differ from it only at variable positions."""
        toks = t.tokens
        n = len(toks)
        if n == 0:
            return None
        limit = max_diff(n)
        groups: dict[tuple[int, ...], list[_Template]] = {}
        ne = str.__ne__
        for u in bucket.sibling_candidates(toks):
            if u is t:
                continue
            ut = u.tokens
            # C-speed pre-filter: unequal tokens minus u's wildcards bound the differences from below.
            if sum(map(ne, ut, toks)) - (n - u.nconst) > limit:
                continue
            diff = tuple(p for p, a, b in zip(range(n), ut, toks, strict=True) if a != b and a != WILD)
            if diff and len(diff) <= limit:
                groups.setdefault(diff, []).append(u)
        if not groups:
            return None
        # Try the difference sets with the most support first; members may differ at a subset.
        # Positions that do not vary enough on their own are dropped and the members recomputed.
        for diff_key in sorted(groups, key=lambda k: (-len(groups[k]), len(k))):
            pset = set(diff_key)
            while pset and n - len(pset) >= 1:
                members = [u for k, us in groups.items() if pset.issuperset(k) for u in us]
                if not members:
                    break
                variable = {p for p in pset if self._variable(p, pset, t, members)}
                if variable == pset:
                    return self._merge(t, members, pset, bucket)
                pset = variable
        return None

    def _variable(self, p: int, pset: set[int], t: _Template, members: Sequence[_Template]) -> bool:
        """Whether position `p` is variable, judged from `t` and its sibling `members`.

        A masked value on either side (or the same ``key=`` with a masked value on one side) makes
        it variable. Otherwise it must show `min_values` distinct values that are rarely repeated
        (at most `max_repeat` lines per value), or twice as many distinct values however often
        they recur; all counts double when only one constant would remain.
        """
        mine = t.tokens[p]
        others = [u.tokens[p] for u in members]
        if is_value(mine) or any(map(is_value, others)):
            return True
        known = self._values
        if mine in known and all(o in known for o in others):
            return True  # every word here was already found to be a value of some variable
        if ("=" in mine or ":" in mine or "(" in mine) and any(same_key_value(mine, o) for o in others):
            return True
        values: dict[str, int] = {mine: 1}
        for u, v in zip(members, others, strict=True):
            values[v] = values.get(v, 0) + u.count
        distinct = len(values)
        # With a single constant left, "the rest is one event" needs twice the evidence.
        needed = self.min_values if len(t.tokens) - len(pset) >= 2 else 2 * self.min_values
        if distinct >= 2 * needed:
            return True  # many distinct values: a variable even if each one recurs (user names, hosts)
        return distinct >= needed and sum(values.values()) <= self.max_repeat * distinct

    def _merge(self, t: _Template, members: Sequence[_Template], pset: set[int], bucket: _Bucket) -> _Template:
        everyone = [t, *members]
        if len(self._values) >= _CACHE_LIMIT:
            self._values.clear()
        for p in pset:
            for u in everyone:
                self._values[u.tokens[p]] = None
        target = min(everyone, key=lambda u: u.created)
        tokens = list(t.tokens)
        for u in everyone:
            for p, a in enumerate(u.tokens):
                if a == WILD:
                    tokens[p] = WILD
        for p in pset:
            tokens[p] = WILD
        bucket.remove(target)
        for u in everyone:
            if u is not target:
                self._absorb(target, u)
                bucket.remove(u)
        target.set_tokens(tokens)
        bucket.add(target)
        target.used = self._seq
        return target

    def _absorb(self, target: _Template, u: _Template) -> None:
        target.count += u.count
        u.merged_into = target
        target.aliases.append(u.tid)
        target.aliases.extend(u.aliases)
        u.aliases = []
        u.count = 0
        self._by_id[u.tid] = target
        self._live -= 1

    def _merge_lengths(self, t: _Template, bucket: _Bucket) -> _Template | None:
        """Merge `t` with templates of other lengths that differ from it only in one middle part.

        The shorter side must be covered by the shared prefix and suffix except for at most one
        token. The middle part is variable when it holds only masked values or ``<*>`` (an optional
        ``(12.8 KB)``, a list of ids), or when it shows `min_values` rarely repeated contents.
        """
        toks = t.tokens
        n = len(toks)
        if n == 0:
            return None
        families: dict[tuple[tuple[str, ...], tuple[str, ...]], list[_Template]] = {}
        soft: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        first, last = toks[0], toks[-1]
        for u in self._varlen:
            found = _gap([*u.head, *u.tail], toks, len(u.head), len(u.tail))
            if found is not None:
                key, is_soft = found
                families.setdefault(key, []).append(u)
                if is_soft:
                    soft.add(key)
        for u in self._ends.sharing_both_ends(first, last):
            if len(u.tokens) != n:
                found = _gap(u.tokens, toks, settled=u.count > 1)
                if found is not None:
                    key, is_soft = found
                    families.setdefault(key, []).append(u)
                    if is_soft:
                        soft.add(key)
        best: tuple[int, tuple[tuple[str, ...], tuple[str, ...]]] | None = None
        for key, members in families.items():
            if key not in soft:
                distinct = len(members) + 1
                if distinct < self.min_values or 1 + sum(u.count for u in members) > self.max_repeat * distinct:
                    continue
            shared = len(key[0]) + len(key[1])
            if best is None or shared > best[0]:
                best = (shared, key)
        if best is None:
            return None
        key = best[1]
        members = families[key]
        target = min(members, key=lambda u: u.created)
        for u in members:
            if u.varlen:
                self._varlen.remove(u)
            else:
                self._buckets[len(u.tokens)].remove(u)
        bucket.remove(t)
        for u in (*members, t):
            if u is not target:
                self._absorb(target, u)
        target.set_tokens([*key[0], _GAP, *key[1]])
        self._varlen.append(target)
        target.used = self._seq
        return target

    # -- eviction

    def _evict(self) -> None:
        """Drop the least recently used tenth of the live templates (and their aliases)."""
        assert self.max_clusters is not None
        live = [t for t in self._by_id.values() if t.merged_into is None]
        live = list({id(t): t for t in live}.values())
        keep = max(1, self.max_clusters - self.max_clusters // 10)
        live.sort(key=lambda t: t.used)
        for t in live[: max(0, len(live) - keep)]:
            if t.varlen:
                self._varlen.remove(t)
            else:
                self._buckets[len(t.tokens)].remove(t)
            for alias in (t.tid, *t.aliases):
                self._by_id.pop(alias, None)
            t.count = -1  # cached references see a dead template and take the slow path
            self._live -= 1
        self._by_skeleton.clear()
        self._by_tokens.clear()

    # -- inspection

    def _templates(self) -> list[_Template]:
        seen: dict[int, _Template] = {}
        for t in self._by_id.values():
            if t.merged_into is None:
                seen[id(t)] = t
        return sorted(seen.values(), key=lambda t: t.created)

    def templates(self) -> list[tuple[str, str, int]]:
        """All live templates as ``(template_id, template, count)``, oldest first."""
        with self._lock:
            return [(t.tid, t.text, t.count) for t in self._templates()]

    def __len__(self) -> int:
        return self._live

    # -- persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the miner's full state to `path` as JSON, atomically (temp file + ``os.replace``)."""
        with self._lock:
            state = self._state()
        # ASCII JSON: a lone surrogate from a badly decoded log line is escaped, not an encode error.
        data = json.dumps(state, ensure_ascii=True, separators=(",", ":"))
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TemplateMiner:
        """Restore a miner written by `save`; template ids, aliases and counts continue where they were."""
        raw = Path(path).read_text(encoding="utf-8")
        try:
            state = json.loads(raw)
        except ValueError as exc:
            raise TemplateStateError(f"{path}: not JSON: {exc}") from exc
        try:
            return cls._from_state(state)
        except TemplateStateError as exc:
            raise TemplateStateError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TemplateStateError(f"{path}: malformed template-miner state: {exc!r}") from exc

    def _state(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": {
                "max_clusters": self.max_clusters,
                "min_values": self.min_values,
                "max_repeat": self.max_repeat,
            },
            "seq": self._seq,
            "templates": [[t.tid, t.tokens, t.count, t.created, t.used, t.aliases] for t in self._templates()],
            "values": list(self._values),
        }

    @classmethod
    def _from_state(cls, saved: object) -> TemplateMiner:
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise TemplateStateError("not a loglens template-miner state")
        if saved.get("version") != STATE_VERSION:
            raise TemplateStateError(f"unsupported state version {saved.get('version')!r}")
        cfg = saved["config"]
        miner = cls(cfg["max_clusters"], min_values=cfg["min_values"], max_repeat=cfg["max_repeat"])
        seq = saved["seq"]
        if not isinstance(seq, int) or seq < 0:
            raise TemplateStateError("bad sequence number")
        for entry in saved["templates"]:
            tid, tokens, count, created, used, aliases = entry
            if not (isinstance(tid, str) and isinstance(count, int) and count >= 1):
                raise TemplateStateError(f"bad template entry {tid!r}")
            if not (isinstance(created, int) and isinstance(used, int) and 0 <= created <= seq and used <= seq):
                raise TemplateStateError(f"bad sequence numbers for template {tid!r}")
            if not isinstance(tokens, list) or not all(isinstance(x, str) for x in tokens) or tokens.count(_GAP) > 1:
                raise TemplateStateError(f"bad tokens for template {tid!r}")
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise TemplateStateError(f"bad aliases for template {tid!r}")
            if tid in miner._by_id or any(a in miner._by_id or a == tid for a in aliases):
                raise TemplateStateError(f"duplicate template id {tid!r}")
            t = _Template(tid, tokens, count, created)
            t.used = used
            t.aliases = list(aliases)
            miner._by_id[tid] = t
            for a in aliases:
                miner._by_id[a] = t
            miner._live += 1
            if t.varlen:
                miner._varlen.append(t)
            else:
                bucket = miner._buckets.get(len(tokens))
                if bucket is None:
                    bucket = miner._buckets[len(tokens)] = _Bucket(len(tokens), miner._ends)
                bucket.add(t)
        values = saved["values"]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise TemplateStateError("bad list of known values")
        miner._values = dict.fromkeys(values)
        miner._seq = seq
        return miner


# --------------------------------------------------------------------------- evaluation


def grouping_accuracy(predicted_ids: Sequence[Hashable], truth_ids: Sequence[Hashable]) -> float:
    """Loghub grouping accuracy: the share of lines whose predicted group is exactly their true group.

    A line counts as correct iff the set of lines sharing its predicted id equals the set
    of lines sharing its ground-truth id. Ids are only compared for equality, so any
    labels work. Raises ValueError if the sequences differ in length; 1.0 for no lines.

    >>> grouping_accuracy(["a", "a", "b", "c"], [1, 1, 2, 2])
    0.5
    """
    if len(predicted_ids) != len(truth_ids):
        raise ValueError(f"length mismatch: {len(predicted_ids)} predicted vs {len(truth_ids)} truth ids")
    if not predicted_ids:
        return 1.0
    pred_sizes = Counter(predicted_ids)
    truth_sizes = Counter(truth_ids)
    pairs = Counter(zip(predicted_ids, truth_ids, strict=True))
    # A predicted group is right iff all its lines share one truth id and that truth group has no other lines.
    truths_per_pred = Counter(p for p, _ in pairs)
    correct = sum(n for (p, t), n in pairs.items() if truths_per_pred[p] == 1 and pred_sizes[p] == truth_sizes[t] == n)
    return correct / len(predicted_ids)
