"""Log template mining: Drain3 with masking, word-aware matching and stable template ids.

`TemplateMiner` turns free-text log messages into templates such as
``connect to <IP> took <DUR> id=<HEX>`` and gives every template a short id that
survives `save` / `load`. It wraps Drain3's `drain3.drain.Drain` (a fixed-depth
prefix tree plus token-similarity clustering) and adds four things, all
configured in code (no ``drain3.ini`` is read):

1. **Masking** before clustering: URLs, dates and times, UUIDs, MAC-like
   addresses, IPv6 and IPv4 addresses (with ports, and comma-separated lists),
   paths, HDFS block ids, hex numbers, sizes, durations and any token containing
   a digit become named placeholders (``<IP>``, ``<NUM>``, ...). A run of
   placeholders separated by spaces or commas collapses into one, so
   variable-length id lists do not split a template.
2. **Tokenising** on whitespace and after ``=``, ``:``, ``,`` and dot leaders
   (``key=value`` -> ``key=`` ``value``). The original spacing is remembered per
   template, so templates read like the log line they came from.
3. **Word-aware similarity**: Drain merges a message into the most similar
   template when enough tokens agree, turning the rest into ``<*>``. Here two
   *different alphabetic words* in the same position (``GET``/``POST``,
   ``RUNNING``/``FAILED``, ``true``/``false``) never merge: they are kept as
   different events, as the loghub ground truth and most operators expect.
   Numbers and other variable-looking tokens still generalise as in Drain.
   Placeholders route through the wildcard branch of the prefix tree, so a line
   starting with ``<HEX>`` finds the template started by ``<NUM>``.
4. **Stable ids and persistence**: a template's id is a 12-hex-digit BLAKE2b
   hash of the cluster's first (masked) template, deterministic across runs;
   `save` writes the whole state (tree, clusters, ids, spacing) as JSON via a
   temporary file and ``os.replace``; `TemplateMiner.load` restores it.

One configuration serves every log source (no per-dataset tuning). On the eight
loghub 2k datasets it reaches the grouping accuracy shown in
``docs/benchmarks_templates.md`` (run ``python bench/templates.py``).
The miner is guarded by a lock, so one instance may be shared between threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from drain3.drain import Drain, LogCluster, Node
from drain3.masking import AbstractMaskingInstruction, LogMasker
from drain3.template_miner_config import TemplateMinerConfig

from loglens.errors import LoglensError

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_MASKS",
    "DEFAULT_MAX_CLUSTERS",
    "DEFAULT_SIM_TH",
    "MaskRule",
    "MatchResult",
    "TemplateMiner",
    "TemplateStateError",
    "build_config",
    "grouping_accuracy",
    "mask",
    "tokenize",
]

DEFAULT_SIM_TH = 0.4
"""Drain similarity threshold: share of a template's constant tokens a message must match."""
DEFAULT_DEPTH = 4
"""Drain prefix-tree depth (root + token count + first token + leaf)."""
DEFAULT_MAX_CLUSTERS = 10_000
"""Templates kept before the least recently used one is dropped."""
MAX_CHILDREN = 100
"""Drain's limit on children of one prefix-tree node."""
MASK_PREFIX = "<"
MASK_SUFFIX = ">"
PARAM = MASK_PREFIX + "*" + MASK_SUFFIX

STATE_FORMAT = "loglens.template-miner"
STATE_VERSION = 1


class TemplateStateError(LoglensError, ValueError):
    """A saved template-miner state file is not valid JSON of the expected shape."""


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The outcome of adding one message.

    `template_id` is stable for the template's lifetime (also across `save`/`load`),
    `template` is the template after this message was merged into it, `is_new` is
    True when the message started a new template and `count` is the number of
    messages the template has absorbed so far.
    """

    template_id: str
    template: str
    is_new: bool
    count: int


# --------------------------------------------------------------------------- masking


class MaskRule(AbstractMaskingInstruction):
    """A Drain3 regex masking instruction with an optional cheap pre-check.

    `guard(content)` returning False skips the regex entirely, which keeps the
    dozen rules below fast on lines they cannot match.
    """

    def __init__(self, mask_with: str, pattern: str, guard: Callable[[str], bool] | None = None) -> None:
        super().__init__(mask_with)
        self.regex = re.compile(pattern)
        self.guard = guard

    @property
    def pattern(self) -> str:
        """The regular expression source."""
        return self.regex.pattern

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        """Replace every match in `content` with ``prefix + mask_with + suffix``."""
        if self.guard is not None and not self.guard(content):
            return content
        return self.regex.sub(mask_prefix + self.mask_with + mask_suffix, content)


class _CollapseRuns(AbstractMaskingInstruction):
    """Collapse a run of placeholders (``<BLK> <BLK> <BLK>``, ``<NUM>, <NUM>``) into its first one.

    Runs last, so a variable-length list of ids does not change the token count.
    """

    def __init__(self) -> None:
        super().__init__("RUN")
        self.regex = re.compile(r"(<[A-Z]+>)(?:,?[ \t]+<[A-Z]+>)+")

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        """Replace each run of placeholders in `content` by the run's first placeholder."""
        if "> <" not in content and ">, <" not in content:
            return content
        return self.regex.sub(r"\1", content)


class _QuantityRule(AbstractMaskingInstruction):
    """Sizes (``12 KB``, ``3GB``, ``5 bytes``) become ``<SIZE>``, durations (``35ms``, ``1.5 s``) ``<DUR>``.

    One regex for both, behind a cheap search for a digit followed by a unit's first letter.
    """

    def __init__(self) -> None:
        super().__init__("SIZE")
        self.regex = re.compile(
            r"(?<![\w.])\d+(?:\.\d+)?\s?(?:(?P<SIZE>[KMGTPE]i?B|[kKMGTPE]b|B|bytes)"
            r"|(?P<DUR>ns|us|µs|ms|msecs?|millis|s|secs?|seconds|mins?|minutes|h|hrs|hours))(?!\w)"
        )
        self._hint = re.compile(r"\d\s?[KMGTPEkBbnuµmsh]").search

    def mask(self, content: str, mask_prefix: str, mask_suffix: str) -> str:
        """Replace sizes and durations in `content` with their placeholders."""
        if self._hint(content) is None:
            return content
        size, duration = mask_prefix + "SIZE" + mask_suffix, mask_prefix + "DUR" + mask_suffix
        return self.regex.sub(lambda m: size if m.group("SIZE") else duration, content)


_has_digit = re.compile(r"\d").search
_HEX4 = r"[0-9a-fA-F]{1,4}"
_V4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_V4_END = r"(?![\w-]|\.\w)"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAY = "(?:" + "|".join(_WEEKDAYS) + ")"
_PATH_CHARS = r"[^\s/\"'?()\[\]{}<>,;:=]"

DEFAULT_MASKS: tuple[AbstractMaskingInstruction, ...] = (
    MaskRule("URL", r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+", lambda s: "://" in s),
    MaskRule(
        "DATE",
        rf"\b{_WEEKDAY},?\s+{_MONTH}\s+\d{{1,2}}\s+\d{{1,2}}:\d{{2}}:\d{{2}}(?:\s+[A-Z]{{2,5}})?(?:\s+\d{{4}})?\b",
        lambda s: any(day in s for day in _WEEKDAYS),
    ),
    MaskRule(
        "DATE",
        r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?(?![\w-])",
        lambda s: "-" in s,
    ),
    MaskRule(
        "UUID",
        r"(?<![0-9A-Za-z])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])",
        lambda s: "-" in s,
    ),
    MaskRule(
        "MAC",
        r"(?<![\w:-])(?:[0-9a-fA-F]{2}[:-]){5,}[0-9a-fA-F]{2}(?![\w:-])",
        lambda s: s.count(":") >= 5 or s.count("-") >= 5,
    ),
    MaskRule(
        "IP",
        rf"(?<![\w:.])(?:(?:{_HEX4}:){{7}}{_HEX4}|(?:{_HEX4}:){{1,7}}:(?:(?:{_HEX4}:){{0,5}}(?:{_V4}|{_HEX4}))?"
        rf"|::(?:{_HEX4}:){{0,5}}(?:{_V4}|{_HEX4}))(?:%[\w.]+)?(?![\w.])",
        lambda s: "::" in s or s.count(":") >= 7,
    ),
    MaskRule(
        "IP",
        rf"(?<![\w.]){_V4}(?::\d{{1,5}})?(?:,\s?{_V4}(?::\d{{1,5}})?)*{_V4_END}",
        lambda s: "." in s,
    ),
    MaskRule("TIME", r"(?<![\d:.])\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?![\d:])", lambda s: ":" in s),
    MaskRule(
        "PATH",
        rf"(?<![\w/.~-])(?:~|\.{{1,2}})?(?:/{_PATH_CHARS}+){{2,}}/?(?:\?[^\s\"'<>]*)?"
        r"|\b[A-Za-z]:\\(?:[^\\\s\"'<>]+\\)*[^\\\s\"'<>]*",
        lambda s: "/" in s or "\\" in s,
    ),
    MaskRule("BLK", r"\bblk_-?\d+\b", lambda s: "blk_" in s),
    MaskRule("HEX", r"(?<![0-9A-Za-z])0[xX][0-9a-fA-F]+(?![0-9A-Za-z])", lambda s: "0x" in s or "0X" in s),
    MaskRule("HEX", r"(?<![\w.-])(?=[0-9]*[a-fA-F])[0-9a-fA-F]{8,}(?![\w.-])"),
    _QuantityRule(),
    MaskRule(
        "NUM",
        r"(?:(?<![\w.-])|(?<=\.\.))(?:[\w-]*\d[\w-]*(?:\.[\w-]+)*|[\w-]+(?:\.[\w-]+)*\.[\w-]*\d[\w-]*(?:\.[\w-]+)*)",
        _has_digit,
    ),
    _CollapseRuns(),
)

_DEFAULT_MASKER = LogMasker(DEFAULT_MASKS, MASK_PREFIX, MASK_SUFFIX)


def mask(message: str) -> str:
    """Mask the variable parts of `message` with the default rules.

    >>> mask("connect to 10.0.0.1:8080 took 35ms id=0xdeadbeef")
    'connect to <IP> took <DUR> id=<HEX>'
    """
    return _DEFAULT_MASKER.mask(message)


# --------------------------------------------------------------------------- tokens

_SPLIT_AFTER = re.compile(r"(?<=[=:,])(?=[^\s=:,])|(?<=\.\.\.)(?=[^\s.])")


def tokenize(masked: str) -> list[str]:
    """Split a masked message into Drain tokens: whitespace, and after ``=``, ``:``, ``,`` or ``...``."""
    return _SPLIT_AFTER.sub(" ", masked).split()


def _glue(masked: str, tokens: Sequence[str]) -> str:
    """For each gap between tokens, ``"1"`` if the message had whitespace there, else ``"0"``."""
    out: list[str] = []
    pos = masked.find(tokens[0]) + len(tokens[0]) if tokens else 0
    for tok in tokens[1:]:
        start = masked.find(tok, pos)
        out.append("1" if start > pos else "0")
        pos = start + len(tok)
    return "".join(out)


def _render(tokens: Sequence[str], glue: str) -> str:
    """Join template tokens with the spacing of the message that created the template."""
    if "0" not in glue:
        return " ".join(tokens)
    parts = [tokens[0]] if tokens else []
    for tok, space in zip(tokens[1:], glue, strict=False):
        parts.append(" " + tok if space == "1" else tok)
    return "".join(parts)


_WORD = re.compile(r"[\"'(\[{]*[A-Za-z][A-Za-z_]*[)\]}\"',.:;!?=]*")


def _is_word(token: str) -> bool:
    """An alphabetic word, possibly quoted/bracketed or followed by punctuation (``"GET``, ``false,``)."""
    return _WORD.fullmatch(token) is not None


class _WordAwareDrain(Drain):
    """Drain with this module's tokeniser, placeholder routing and word-conflict rule."""

    def get_content_as_tokens(self, content: str) -> list[str]:
        return tokenize(content)

    @staticmethod
    def has_numbers(s: str) -> bool:
        # Placeholders go down the wildcard branch of the prefix tree, like numbers do.
        return ("<" in s and ">" in s) or _has_digit(s) is not None

    def get_seq_distance(self, seq1: Sequence[str], seq2: Sequence[str], include_params: bool) -> tuple[float, int]:
        # seq1 is the template, seq2 the message (same length, checked by the caller's tree).
        if not seq1:  # pragma: no cover - Drain resolves empty messages before scoring
            return 1.0, 0
        param = self.param_str
        same = 0
        params = 0
        for t, m in zip(seq1, seq2, strict=True):
            if t == param:
                params += 1
            elif t == m:
                same += 1
            elif _is_word(t) and _is_word(m):
                return -1.0, 0  # two different words: a different event, never a match
        if include_params:
            same += params
        return same / len(seq1), params


# --------------------------------------------------------------------------- miner


def _check_params(sim_th: float, depth: int, max_clusters: int | None) -> None:
    if not 0.0 <= sim_th <= 1.0:
        raise ValueError(f"sim_th must be within [0, 1], got {sim_th!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 3 <= depth <= 64:
        raise ValueError(f"depth must be an int within [3, 64], got {depth!r}")
    if max_clusters is not None and (
        isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1
    ):
        raise ValueError(f"max_clusters must be a positive int or None, got {max_clusters!r}")


def build_config(sim_th: float, depth: int, max_clusters: int | None) -> TemplateMinerConfig:
    """A Drain3 `TemplateMinerConfig` built in code with this module's masks (no ini file)."""
    config = TemplateMinerConfig()
    config.drain_sim_th = sim_th
    config.drain_depth = depth
    config.drain_max_children = MAX_CHILDREN
    config.drain_max_clusters = max_clusters
    config.drain_extra_delimiters = []
    config.masking_instructions = list(DEFAULT_MASKS)
    config.mask_prefix = MASK_PREFIX
    config.mask_suffix = MASK_SUFFIX
    config.parametrize_numeric_tokens = True
    config.profiling_enabled = False
    config.snapshot_compress_state = False
    return config


class TemplateMiner:
    """Online log template miner (Drain3 + masking + stable ids); see the module docstring.

    >>> miner = TemplateMiner()
    >>> miner.add("user 17 logged in from 10.0.0.1").template
    'user <NUM> logged in from <IP>'
    >>> r = miner.add("user 42 logged in from 10.0.0.9")
    >>> (r.is_new, r.count)
    (False, 2)
    """

    def __init__(
        self,
        sim_th: float = DEFAULT_SIM_TH,
        depth: int = DEFAULT_DEPTH,
        max_clusters: int | None = DEFAULT_MAX_CLUSTERS,
    ) -> None:
        _check_params(sim_th, depth, max_clusters)
        self.sim_th = sim_th
        self.depth = depth
        self.max_clusters = max_clusters
        self.config = build_config(sim_th, depth, max_clusters)
        self._masker = LogMasker(self.config.masking_instructions, MASK_PREFIX, MASK_SUFFIX)
        self._drain = _WordAwareDrain(
            depth=depth,
            sim_th=sim_th,
            max_children=self.config.drain_max_children,
            max_clusters=max_clusters,
            extra_delimiters=(),
            param_str=PARAM,
            parametrize_numeric_tokens=True,
        )
        self._lock = threading.RLock()
        self._ids: dict[int, str] = {}  # drain cluster id -> stable template id
        self._glue: dict[int, str] = {}  # drain cluster id -> spacing of the first message
        self._used: dict[int, int] = {}  # drain cluster id -> last add() sequence number
        self._owner: dict[str, int] = {}  # stable template id -> drain cluster id
        self._seq = 0
        self._rendered: dict[int, tuple[tuple[str, ...], str]] = {}

    # -- mining

    def mask(self, message: str) -> str:
        """The message with its variable parts replaced by placeholders (what the miner clusters)."""
        return self._masker.mask(message)

    def add(self, message: str) -> MatchResult:
        """Mine one message (text only, without timestamp/level header) and return its template."""
        masked = self._masker.mask(message)
        with self._lock:
            return self._add_masked(masked)

    def add_many(self, messages: Iterable[str]) -> list[MatchResult]:
        """`add` for each message, in order."""
        masker = self._masker
        with self._lock:
            return [self._add_masked(masker.mask(m)) for m in messages]

    def match(self, message: str) -> MatchResult | None:
        """The known template `message` belongs to, without learning from it; None if there is none.

        Every constant token of the template must be present (Drain3's exact match, falling back
        to a scan of all templates of the same length); the result has ``is_new=False``.
        """
        masked = self._masker.mask(message)
        with self._lock:
            cluster = self._drain.match(masked, full_search_strategy="fallback")
            if cluster is None:
                return None
            return MatchResult(
                self._ids[cluster.cluster_id], self._template_text(cluster.cluster_id, cluster), False, cluster.size
            )

    def _add_masked(self, masked: str) -> MatchResult:
        cluster, change = self._drain.add_log_message(masked)
        cid = cluster.cluster_id
        is_new = change == "cluster_created"
        if is_new:
            self._register(cid, masked, cluster.log_template_tokens)
        self._seq += 1
        self._used[cid] = self._seq
        return MatchResult(self._ids[cid], self._template_text(cid, cluster), is_new, cluster.size)

    def _register(self, cid: int, masked: str, tokens: Sequence[str]) -> None:
        if self.max_clusters is not None and len(self._ids) >= 2 * self.max_clusters:
            self._prune()
        glue = _glue(masked, tokens)
        text = _render(tokens, glue)
        tid = hashlib.blake2b(text.encode("utf-8"), digest_size=6).hexdigest()
        n = 1
        while (owner := self._owner.get(tid)) is not None:
            if owner not in self._drain.id_to_cluster:  # evicted by the LRU: its id is free again
                self._forget(owner)
                break
            n += 1  # same first template as a live cluster (rare): derive another id
            tid = hashlib.blake2b(f"{text}\x00{n}".encode(), digest_size=6).hexdigest()
        self._ids[cid] = tid
        self._glue[cid] = glue
        self._owner[tid] = cid

    def _prune(self) -> None:
        """Forget metadata of clusters Drain's LRU cache has evicted."""
        live = self._drain.id_to_cluster
        for cid in [c for c in self._ids if c not in live]:
            self._forget(cid)

    def _forget(self, cid: int) -> None:
        self._owner.pop(self._ids.pop(cid), None)
        self._glue.pop(cid, None)
        self._used.pop(cid, None)
        self._rendered.pop(cid, None)

    def _template_text(self, cid: int, cluster: LogCluster) -> str:
        tokens = cluster.log_template_tokens
        cached = self._rendered.get(cid)
        if cached is not None and cached[0] is tokens:
            return cached[1]
        text = _render(tokens, self._glue[cid])
        self._rendered[cid] = (tokens, text)
        return text

    # -- inspection

    def templates(self) -> list[tuple[str, str, int]]:
        """All live templates as ``(template_id, template, count)``, oldest first."""
        with self._lock:
            clusters = sorted(self._drain.id_to_cluster.values(), key=lambda c: c.cluster_id)
            return [(self._ids[c.cluster_id], self._template_text(c.cluster_id, c), c.size) for c in clusters]

    def __len__(self) -> int:
        return len(self._drain.id_to_cluster)

    # -- persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the miner's full state to `path` as JSON, atomically (temp file + ``os.replace``)."""
        with self._lock:
            state = self._state()
        data = json.dumps(state, ensure_ascii=False, separators=(",", ":"))
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
        """Restore a miner written by `save`; template ids and counts continue where they were."""
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
        drain = self._drain
        order = sorted(drain.id_to_cluster.values(), key=lambda c: self._used.get(c.cluster_id, 0))
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "config": {"sim_th": self.sim_th, "depth": self.depth, "max_clusters": self.max_clusters},
            "clusters_counter": drain.clusters_counter,
            # least recently used first, so reloading restores the LRU order
            "clusters": [
                [
                    c.cluster_id,
                    self._ids[c.cluster_id],
                    list(c.log_template_tokens),
                    c.size,
                    self._glue[c.cluster_id],
                ]
                for c in order
            ],
            "tree": _node_to_json(drain.root_node),
        }

    @classmethod
    def _from_state(cls, state: Any) -> TemplateMiner:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise TemplateStateError("not a loglens template-miner state")
        if state.get("version") != STATE_VERSION:
            raise TemplateStateError(f"unsupported state version {state.get('version')!r}")
        cfg = state["config"]
        miner = cls(sim_th=float(cfg["sim_th"]), depth=cfg["depth"], max_clusters=cfg["max_clusters"])
        drain = miner._drain
        for seq, (cid, tid, tokens, size, glue) in enumerate(state["clusters"], start=1):
            if not (isinstance(cid, int) and isinstance(tid, str) and isinstance(size, int) and size >= 1):
                raise TemplateStateError(f"bad cluster entry {cid!r}")
            if not isinstance(glue, str) or len(glue) != max(len(tokens) - 1, 0) or set(glue) - {"0", "1"}:
                raise TemplateStateError(f"bad spacing for cluster {cid!r}")
            if not all(isinstance(t, str) for t in tokens) or tid in miner._owner or cid in miner._ids:
                raise TemplateStateError(f"bad or duplicate cluster {cid!r}")
            cluster = LogCluster(tokens, cid)
            cluster.size = size
            drain.id_to_cluster[cid] = cluster
            miner._ids[cid] = tid
            miner._glue[cid] = glue
            miner._used[cid] = seq
            miner._owner[tid] = cid
        miner._seq = len(miner._ids)
        counter = state["clusters_counter"]
        if not isinstance(counter, int) or any(cid > counter for cid in miner._ids):
            raise TemplateStateError("clusters_counter is behind the cluster ids")
        drain.clusters_counter = counter
        drain.root_node = _node_from_json(state["tree"])
        return miner


def _node_to_json(node: Node) -> dict[str, Any]:
    return {
        "c": list(node.cluster_ids),
        "k": {k: _node_to_json(v) for k, v in node.key_to_child_node.items()},
    }


def _node_from_json(data: Any) -> Node:
    if not isinstance(data, dict):
        raise TemplateStateError("bad prefix-tree node")
    node = Node()
    ids = data["c"]
    if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
        raise TemplateStateError("bad cluster ids in prefix tree")
    node.cluster_ids = list(ids)
    node.key_to_child_node = {str(k): _node_from_json(v) for k, v in data["k"].items()}
    return node


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
