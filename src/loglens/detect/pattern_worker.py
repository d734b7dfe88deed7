"""Template mining off the hot path: `PatternWorker` mines committed logs on its own thread.

Behind a bounded queue: when it falls behind, INFO lines are shed first and then whole batches
are dropped and counted — ingest never waits for it. Findings (`new_pattern`, `pattern_rate`)
are handed to a callback (the evaluator's queue live, the replay directly in a backtest).
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from loglens.config import AlertsConfig, NewPatternRule
from loglens.detect.anomaly import RateJump, TemplateRates
from loglens.detect.documents import PatternFinding
from loglens.models import LEVELS

log = logging.getLogger("loglens.patterns")

_MINE_CACHE_ENTRIES = 100_000
_MINE_REST_FACTOR = 2.0


class PatternWorker:
    """Mines templates from committed logs on its own thread, behind a bounded queue.

    `submit` never blocks: when more than `max_queue_logs` logs wait, the batch is dropped and
    counted in `dropped`. Miner state is saved next to the store so template ids survive restarts.
    """

    def __init__(
        self,
        alerts: AlertsConfig,
        on_finding: Callable[[PatternFinding], None],
        *,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        max_queue_logs: int = 200_000,
        save_interval_s: float = 30.0,
    ) -> None:
        from loglens.detect.patterns import TemplateMiner

        self.rule = alerts.rules.new_pattern
        self.on_finding = on_finding
        self.state_path = state_path
        self.clock = clock
        self.max_queue_logs = max_queue_logs
        self.save_interval_s = save_interval_s
        self.miner = TemplateMiner()
        self.born = clock()
        if state_path is not None and state_path.exists():
            try:
                self.miner = TemplateMiner.load(state_path)
                meta = orjson.loads(self._meta_path.read_bytes()) if self._meta_path.exists() else {}
                self.born = float(meta.get("born", self.born))
            except (ValueError, OSError) as exc:  # a corrupt state file must not stop the server
                # (also a state of an earlier masking version: its templates would call every known
                # event new) — relearning starts a new warm-up, so no new_pattern fires meanwhile
                log.warning(
                    "cannot load template miner state; relearning, new_pattern waits for the warm-up",
                    extra={"error": str(exc), "warmup_seconds": self.rule.warmup_seconds},
                )
        self.rates = TemplateRates(factor=self.rule.rate_jump_factor)
        self._min_level = LEVELS.index(self.rule.min_level)
        self._queue: queue.Queue[pa.Table | None] = queue.Queue()
        self._queued = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._examples: dict[str, tuple[str, str, int | None]] = {}
        self._cache: dict[str, Any] = {}
        self._dirty = False
        self._last_save = time.monotonic()
        self.processed = 0
        self.dropped = 0
        self.busy_seconds = 0.0

    def reconfigure(self, rule: NewPatternRule) -> None:
        """Apply a reloaded new_pattern rule (level floor and rate-jump factor)."""
        self.rule = rule
        self._min_level = LEVELS.index(rule.min_level)
        self.rates.factor = rule.rate_jump_factor

    @property
    def _meta_path(self) -> Path:
        assert self.state_path is not None
        return self.state_path.with_name(self.state_path.name + ".meta")

    @property
    def lines_per_second(self) -> float:
        """Mining throughput measured on this worker."""
        return self.processed / self.busy_seconds if self.busy_seconds else 0.0

    def submit(self, logs: pa.Table) -> bool:
        """Queue a committed batch for mining; False (and counted) when the queue is full."""
        n = logs.num_rows
        if not n or not self.rule.enabled:
            return True
        cols = [c for c in ("id", "ts", "level", "service", "message") if c in logs.column_names]
        logs = logs.select(cols)
        with self._lock:
            backlog = self._queued
        if backlog > self.max_queue_logs // 4:
            # Falling behind: keep the rows new_pattern alerts on (level >= min_level) and shed the
            # rest first, so a flood of INFO lines cannot hide a new error.
            keep = pc.is_in(logs["level"], value_set=pa.array(list(LEVELS[self._min_level :])))
            kept = logs.filter(keep)
            self.dropped += n - kept.num_rows
            logs, n = kept, kept.num_rows
            if not n:
                return False
        with self._lock:
            if self._queued + n > self.max_queue_logs:
                self.dropped += n
                return False
            self._queued += n
        self._queue.put(logs)
        return True

    def start(self) -> None:
        """Start the mining thread."""
        self._thread = threading.Thread(target=self._run, name="loglens-patterns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish queued work, stop, and save the miner state."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None
        self.save()

    def save(self) -> None:
        """Persist the miner (atomic) and its birth time."""
        if self.state_path is None:
            return
        try:
            self.miner.save(self.state_path)
            self._meta_path.write_bytes(orjson.dumps({"born": self.born}))
            self._dirty = False
        except OSError as exc:
            log.warning("cannot save template miner state", extra={"error": str(exc)})

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                return
            # Everything queued meanwhile is mined as one batch: each call's fixed cost (Arrow
            # and numpy calls, each of which may wait for the GIL) is paid once, and equal
            # messages across the batches are mined once. The results are those of the batches
            # one after another (see `process`).
            items = [item]
            rows = item.num_rows
            while rows < self.max_queue_logs:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
                rows += nxt.num_rows
            with self._lock:
                self._queued -= rows  # the backlog is what waits, not what is being mined
            started = time.thread_time()
            try:
                for batch in _concat(items):
                    self.process(batch)
            except Exception:  # the miner must never take the server down
                log.exception("template mining failed")
            # Mining holds the GIL; resting in proportion to the CPU it took keeps it to about a
            # third of one core, so ingest keeps its throughput. (CPU, not wall time: on a busy
            # machine the wall time of a pass is mostly waiting for the GIL and a core, and
            # resting for that too left the miner behind, shedding most lines.) A backlog sheds
            # INFO lines first.
            time.sleep(min(1.0, (time.thread_time() - started) * _MINE_REST_FACTOR))
            if self._dirty and time.monotonic() - self._last_save > self.save_interval_s:
                self._last_save = time.monotonic()
                self.save()

    def process(self, logs: pa.Table) -> list[PatternFinding]:
        """Mine one batch (in the calling thread); returns and reports new-pattern findings.

        Every message is counted, but each distinct message of the batch is mined once (Drain
        maps equal input to the same cluster, and only its first occurrence can be new): the
        per-row work is Arrow's dictionary encoding and numpy counting, not Python. The results
        are exactly those of mining the rows one by one (`_process_rows`), whatever the batch
        sizes: where the message cache would fill up, the batch is cut at the row whose miss
        clears it.
        """
        started = time.perf_counter()
        now = self.clock()
        learning = now - self.born < self.rule.warmup_seconds
        found: list[PatternFinding] = []
        if logs.num_rows and logs["message"].null_count:
            found = self._process_rows(logs, now, learning)
        elif logs.num_rows:
            rest = logs
            while rest.num_rows:
                coded = pc.dictionary_encode(rest["message"].combine_chunks())
                cut = self._cache_fills_at(coded)
                if cut is None:
                    found += self._process_distinct(rest, coded, now, learning)
                    break
                if cut:
                    head = rest.slice(0, cut)
                    found += self._process_distinct(
                        head, pc.dictionary_encode(head["message"].combine_chunks()), now, learning
                    )
                self._cache.clear()  # as the row path does on the miss at row `cut`, before remembering it
                rest = rest.slice(cut)
        self.processed += logs.num_rows
        self.busy_seconds += time.perf_counter() - started
        for f in found:
            self.on_finding(f)
        return found

    def _cache_fills_at(self, coded: pa.DictionaryArray) -> int | None:
        """The row whose cache miss finds the message cache full (the row path clears it
        there), or None when every miss of these rows fits."""
        room = _MINE_CACHE_ENTRIES - len(self._cache)
        if len(coded.dictionary) <= room:
            return None
        cache = self._cache
        misses = [j for j, msg in enumerate(coded.dictionary.to_pylist()) if msg not in cache]
        if len(misses) <= room:
            return None
        rows_of = coded.indices.to_numpy(zero_copy_only=False)
        # distinct messages are numbered in order of first appearance: the first row of message j
        return int(np.unique(rows_of, return_index=True)[1][misses[room]])

    def _process_distinct(
        self, logs: pa.Table, coded: pa.DictionaryArray, now: float, learning: bool
    ) -> list[PatternFinding]:
        distinct: list[str] = coded.dictionary.to_pylist()
        rows_of = coded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        results = self._mine_distinct(distinct)
        # Per distinct message, only a template code; a row's other fields are read only for
        # the few messages that give a template its example or are new.
        examples = self._examples
        template_code: dict[str, int] = {}
        codes = np.array([template_code.setdefault(r.template_id, len(template_code)) for r in results], dtype=np.int64)
        templates = list(template_code)
        # the messages that are new, and each template's first message when it has no example yet
        first_of_template = np.unique(codes, return_index=True)[1].tolist()
        wanted = sorted(
            {j for j, r in enumerate(results) if r.is_new}
            | {j for c, j in enumerate(first_of_template) if templates[c] not in examples}
        )
        found: list[PatternFinding] = []
        if wanted:
            # the row where each distinct message first occurs (the dictionary is in that order)
            first_rows = pa.array(np.unique(rows_of, return_index=True)[1][wanted])
            services = logs["service"].take(first_rows).to_pylist()
            ids = logs["id"].take(first_rows).to_pylist() if "id" in logs.column_names else [None] * len(wanted)
            levels = logs["level"].take(first_rows).to_pylist()
            for j, svc, lid, lvl in zip(wanted, services, ids, levels, strict=True):
                r, msg = results[j], distinct[j]
                if r.is_new:
                    self._dirty = True
                if r.template_id not in examples:
                    examples[r.template_id] = (svc, msg, lid)
                if r.is_new and not learning and LEVELS.index(lvl) >= self._min_level:
                    found.append(PatternFinding("new_pattern", svc, r.template_id, r.template, msg, lvl, lid, now))
        # occurrences per (template, minute), in order of first appearance
        row_template = codes[rows_of]
        minute = _minutes(logs).to_numpy(zero_copy_only=False).astype(np.int64)
        lo = int(minute.min())
        key = row_template * (int(minute.max()) - lo + 1) + (minute - lo)
        _, first_at, counts = np.unique(key, return_index=True, return_counts=True)
        for k in np.argsort(first_at, kind="stable").tolist():
            row = int(first_at[k])
            self.rates.add(templates[int(row_template[row])], int(minute[row]) * 60, int(counts[k]))
        return found

    def _process_rows(self, logs: pa.Table, now: float, learning: bool) -> list[PatternFinding]:
        messages = logs["message"].to_pylist()
        results = self._mine_rows(messages)
        levels = logs["level"].to_pylist()
        services = logs["service"].to_pylist()
        ids = logs["id"].to_pylist() if "id" in logs.column_names else [None] * len(messages)
        minutes = _minutes(logs).to_pylist()
        found: list[PatternFinding] = []
        counts: dict[tuple[str, int], int] = {}
        for r, msg, lvl, svc, lid, minute in zip(results, messages, levels, services, ids, minutes, strict=True):
            counts[(r.template_id, minute * 60)] = counts.get((r.template_id, minute * 60), 0) + 1
            if r.is_new:
                self._dirty = True
            if r.template_id not in self._examples:
                self._examples[r.template_id] = (svc, msg, lid)
            if r.is_new and not learning and LEVELS.index(lvl) >= self._min_level:
                found.append(PatternFinding("new_pattern", svc, r.template_id, r.template, msg, lvl, lid, now))
        for (tid, minute), n in counts.items():
            self.rates.add(tid, minute, n)
        return found

    def _mine_distinct(self, messages: list[str]) -> list[Any]:
        """Template of each of `messages` (distinct; the cache has room for all of them): a
        message seen before is answered from the cache, the others are mined in order."""
        cache = self._cache
        out: list[Any] = list(map(cache.get, messages))
        miss_at = [i for i, hit in enumerate(out) if hit is None]
        if not miss_at:
            return out
        # in order, as one add() each, with less overhead
        mined = self.miner.add_many([messages[i] for i in miss_at])
        for i, hit in zip(miss_at, mined, strict=True):
            out[i] = hit
            cache[messages[i]] = hit if not hit.is_new else dataclasses.replace(hit, is_new=False)
        return out

    def _mine_rows(self, messages: list[str]) -> list[Any]:
        """Template of each message; identical messages are mined once (Drain maps equal input
        to the same cluster), which removes most of the regex/tokenising work on real traffic."""
        cache = self._cache
        out: list[Any] = []
        for msg in messages:
            hit = cache.get(msg)
            if hit is None:
                hit = self.miner.add(msg)
                if len(cache) >= _MINE_CACHE_ENTRIES:
                    cache.clear()
                cache[msg] = hit if not hit.is_new else dataclasses.replace(hit, is_new=False)
            out.append(hit)
        return out

    def close_minutes(self, now: float) -> list[PatternFinding]:
        """Report templates whose last closed minute jumped far above their own rate."""
        jumps: list[RateJump] = self.rates.close(now)
        out = []
        templates = {tid: text for tid, text, _ in self.miner.templates()} if jumps else {}
        for j in jumps:
            svc, example, lid = self._examples.get(j.template_id, ("unknown", "", None))
            out.append(
                PatternFinding(
                    "pattern_rate",
                    svc,
                    j.template_id,
                    templates.get(j.template_id, j.template_id),
                    example,
                    "INFO",
                    lid,
                    j.minute_s + 60,
                    float(j.observed),
                    j.expected,
                )
            )
        for f in out:
            self.on_finding(f)
        return out


def _minutes(logs: pa.Table) -> pa.Array:
    """Event-time minute of each log (epoch µs // 60 s)."""
    return pc.divide(pc.cast(logs["ts"], pa.int64()), 60_000_000).combine_chunks()


def _concat(batches: list[pa.Table]) -> list[pa.Table]:
    """The batches as one table (several when their columns differ)."""
    if len(batches) == 1:
        return batches
    try:
        return [pa.concat_tables(batches)]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return batches
