"""Template mining: accuracy on loghub, the GA metric, masking, stable ids and persistence."""

from __future__ import annotations

import csv
import json
import threading
from functools import cache
from pathlib import Path

import pytest

from loglens.detect.patterns import (
    MatchResult,
    TemplateMiner,
    TemplateStateError,
    grouping_accuracy,
    mask,
    tokenize,
)
from loglens.errors import LoglensError

LOGHUB = Path(__file__).resolve().parents[1] / "data" / "loghub"

# Achieved with the one default config (bench/templates.py), rounded down to 0.01, minus 0.01.
# Achieved: Android 0.954, BGL 0.996, HDFS 1.000, Hadoop 0.993, HealthApp 0.902,
#           OpenStack 1.000, Spark 0.999, Zookeeper 0.995; average 0.980.
GA_FLOOR = {
    "Android": 0.94,
    "BGL": 0.98,
    "HDFS": 0.99,
    "Hadoop": 0.98,
    "HealthApp": 0.89,
    "OpenStack": 0.99,
    "Spark": 0.98,
    "Zookeeper": 0.98,
}
AVERAGE_FLOOR = 0.97


def load_loghub(dataset: str) -> tuple[list[str], list[str]]:
    """`Content` and ground-truth `EventId` columns of one loghub 2k dataset."""
    with (LOGHUB / f"{dataset}_2k.log_structured.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["Content"] for r in rows], [r["EventId"] for r in rows]


@cache
def accuracy(dataset: str) -> float:
    messages, truth = load_loghub(dataset)
    results = TemplateMiner().add_many(messages)
    return grouping_accuracy([r.template_id for r in results], truth)


# --------------------------------------------------------------------------- (a) accuracy on loghub


def test_loghub_data_is_in_the_repo() -> None:
    assert (LOGHUB / "LICENSE").is_file() and (LOGHUB / "README.md").is_file()
    for dataset in GA_FLOOR:
        messages, truth = load_loghub(dataset)
        assert len(messages) == len(truth) == 2000


@pytest.mark.parametrize("dataset", sorted(GA_FLOOR))
def test_grouping_accuracy_per_dataset(dataset: str) -> None:
    assert accuracy(dataset) >= GA_FLOOR[dataset]


def test_grouping_accuracy_targets() -> None:
    scores = {d: accuracy(d) for d in GA_FLOOR}
    assert sum(scores.values()) / len(scores) >= AVERAGE_FLOOR
    assert sum(scores.values()) / len(scores) >= 0.85  # the project target
    for dataset in ("HDFS", "BGL", "Spark", "Zookeeper"):
        assert scores[dataset] >= 0.95, dataset


# --------------------------------------------------------------------------- (b) the GA metric


def test_grouping_accuracy_hand_made() -> None:
    # lines 0,1 form an exact group; b and c split truth group 2 -> lines 2,3 are wrong
    assert grouping_accuracy(["a", "a", "b", "c"], [1, 1, 2, 2]) == 0.5
    # labels are arbitrary: a relabelled perfect grouping scores 1
    assert grouping_accuracy(["x", "y", "x", "z"], ["E1", "E2", "E1", "E3"]) == 1.0
    # merging two truth groups makes all their lines wrong, the untouched group stays right
    assert grouping_accuracy([1, 1, 1, 2], ["E1", "E1", "E2", "E3"]) == 0.25
    # one predicted group equals truth group E1 but shares an id with nothing else
    assert grouping_accuracy([7, 7, 8, 9, 9], ["E1", "E1", "E2", "E2", "E3"]) == 0.4
    assert grouping_accuracy([], []) == 1.0


def test_grouping_accuracy_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="length mismatch"):
        grouping_accuracy([1, 2], [1])


# --------------------------------------------------------------------------- (c) stable ids, save/load


def test_ids_stable_across_save_and_load(tmp_path: Path) -> None:
    messages, _ = load_loghub("HDFS")
    miner = TemplateMiner()
    first = miner.add_many(messages[:1000])
    path = tmp_path / "state" / "miner.json"
    miner.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["miner.json"]  # no temp file left behind

    reloaded = TemplateMiner.load(path)
    assert reloaded.templates() == miner.templates()
    again = reloaded.add(messages[0])
    assert again.is_new is False
    assert again.template_id == first[0].template_id
    assert again.count == next(c for i, _, c in miner.templates() if i == first[0].template_id) + 1

    # continuing after a reload gives exactly what one uninterrupted miner gives
    straight = TemplateMiner().add_many(messages)
    assert TemplateMiner.load(path).add_many(messages[1000:]) == straight[1000:]


def test_ids_are_deterministic_across_fresh_miners() -> None:
    messages, _ = load_loghub("Zookeeper")
    a = [r.template_id for r in TemplateMiner().add_many(messages)]
    b = [r.template_id for r in TemplateMiner().add_many(messages)]
    assert a == b
    assert all(len(t) == 12 and int(t, 16) >= 0 for t in a)


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "miner.json"
    miner = TemplateMiner()
    miner.add("job 1 started")
    miner.save(path)
    miner.add("disk full on /dev/sda1")
    miner.save(path)
    assert len(TemplateMiner.load(path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["miner.json"]


def test_save_failure_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("loglens.detect.patterns.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        TemplateMiner().save(tmp_path / "miner.json")
    assert list(tmp_path.iterdir()) == []


def test_load_keeps_config_and_lru_limit(tmp_path: Path) -> None:
    miner = TemplateMiner(sim_th=0.5, depth=5, max_clusters=None)
    miner.add("a b c 1")
    miner.save(tmp_path / "m.json")
    loaded = TemplateMiner.load(tmp_path / "m.json")
    assert (loaded.sim_th, loaded.depth, loaded.max_clusters) == (0.5, 5, None)


def _valid_state(tmp_path: Path) -> dict:
    miner = TemplateMiner()
    miner.add_many(["user 1 logged in", "user 2 logged in", "disk /dev/sda1 full"])
    miner.save(tmp_path / "ok.json")
    return json.loads((tmp_path / "ok.json").read_text())


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: "not json {",
        lambda s: json.dumps([1, 2]),
        lambda s: json.dumps({**s, "format": "other"}),
        lambda s: json.dumps({**s, "version": 99}),
        lambda s: json.dumps({k: v for k, v in s.items() if k != "tree"}),
        lambda s: json.dumps({**s, "config": {**s["config"], "depth": 1}}),
        lambda s: json.dumps({**s, "clusters": [[1, "x", ["a"], 0, ""]]}),
        lambda s: json.dumps({**s, "clusters": [[1, "x", ["a", "b"], 1, ""]]}),
        lambda s: json.dumps({**s, "clusters": [[1, "x", ["a"], 1, ""], [2, "x", ["b"], 1, ""]]}),
        lambda s: json.dumps({**s, "clusters_counter": 0}),
        lambda s: json.dumps({**s, "tree": []}),
        lambda s: json.dumps({**s, "tree": {"c": ["1"], "k": {}}}),
    ],
)
def test_load_rejects_bad_state(tmp_path: Path, corrupt) -> None:
    path = tmp_path / "bad.json"
    path.write_text(corrupt(_valid_state(tmp_path)))
    with pytest.raises(TemplateStateError) as info:
        TemplateMiner.load(path)
    assert isinstance(info.value, LoglensError) and isinstance(info.value, ValueError)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------- (d) masking


def test_masking_replaces_variable_parts() -> None:
    assert mask("connect to 10.0.0.1:8080 took 35ms id=0xdeadbeef") == "connect to <IP> took <DUR> id=<HEX>"
    miner = TemplateMiner()
    first = miner.add("connect to 10.0.0.1:8080 took 35ms id=0xdeadbeef")
    second = miner.add("connect to 192.168.7.20:443 took 1.5s id=0xCAFE")
    assert first.template == "connect to <IP> took <DUR> id=<HEX>"
    assert (second.template_id, second.is_new, second.count) == (first.template_id, False, 2)


@pytest.mark.parametrize(
    ("message", "masked"),
    [
        ("from fe80::1%eth0 to 2001:db8::ff00:42:8329", "from <IP> to <IP>"),
        ("peer 2001:0db8:85a3:0000:0000:8a2e:0370:7334 and ::1", "peer <IP> and <IP>"),
        ("mapped ::ffff:192.168.1.1 at [::1]:8080", "mapped <IP> at [<IP>]:<NUM>"),
        ("forwarded for 10.0.0.1, 10.0.0.2:80 ok", "forwarded for <IP> ok"),
        ("req 123e4567-e89b-12d3-a456-426614174000 done", "req <UUID> done"),
        ('"GET /v2/abc/servers/detail?all=True HTTP/1.1" 200', '"GET <PATH> HTTP/<NUM>" <NUM>'),
        ("see https://example.com/a?b=1 and C:\\Temp\\x.log", "see <URL> and <PATH>"),
        ("Receiving block blk_-1608999687919862906 src", "Receiving block <BLK> src"),
        ("delete blk_1 blk_-2 blk_3", "delete <BLK>"),
        ("at Thu Aug 4 12:00:00 PDT 2005 and 2024-01-02T03:04:05.123Z", "at <DATE> and <DATE>"),
        ("tick 12:34:56,789 done", "tick <TIME> done"),
        ("stored 12.5 KB of 3GB in 200 ms", "stored <SIZE> of <SIZE> in <DUR>"),
        ("chip 00:1a:2b:3c:4d:5e mask ffffffff", "chip <MAC> mask <HEX>"),
        ("task attempt_1445144423722_0020_m_000001_0 on core.2275", "task <NUM> on <NUM>"),
        ("interrupt caused by dcbf.........0", "interrupt caused by dcbf.........<NUM>"),
        ("plain words stay as they are", "plain words stay as they are"),
    ],
)
def test_mask_rules(message: str, masked: str) -> None:
    assert mask(message) == masked
    assert TemplateMiner().mask(message) == masked


def test_mask_rules_are_drain3_instructions() -> None:
    from drain3.masking import AbstractMaskingInstruction

    from loglens.detect.patterns import DEFAULT_MASKS, MaskRule

    assert all(isinstance(m, AbstractMaskingInstruction) for m in DEFAULT_MASKS)
    ip = next(m for m in DEFAULT_MASKS if isinstance(m, MaskRule) and m.mask_with == "IP")
    assert ip.pattern == ip.regex.pattern and "::" in ip.pattern
    assert ip.mask("no address here", "<", ">") == "no address here"  # guard skips the regex


def test_tokenize_splits_after_separators() -> None:
    assert tokenize("a=<NUM>, b:c d...e") == ["a=", "<NUM>,", "b:", "c", "d...", "e"]
    assert tokenize("") == []


# --------------------------------------------------------------------------- clustering behaviour


def test_different_words_are_different_events_numbers_are_not() -> None:
    miner = TemplateMiner()
    get = miner.add('10.0.0.1 "GET /v2/servers HTTP/1.1" status: 200 len: 1893 time: 0.24')
    post = miner.add('10.0.0.2 "POST /v2/events HTTP/1.1" status: 200 len: 1893 time: 0.25')
    get2 = miner.add('10.0.0.3 "GET /v2/x/y HTTP/1.1" status: 404 len: 12 time: 1.5')
    assert get.template_id != post.template_id
    assert get2.template_id == get.template_id and get2.count == 2


def test_template_keeps_original_spacing_and_generalises() -> None:
    miner = TemplateMiner()
    miner.add("lock=12, flags=0x1, name=alpha-1, ws=null")
    r = miner.add("lock=13, flags=0x2, name=beta_2, ws=WorkSource{1}")
    assert r.template == "lock=<NUM>, flags=<HEX>, name=<NUM>, ws=<*>"


def test_placeholder_first_token_matches_across_mask_kinds() -> None:
    miner = TemplateMiner()
    a = miner.add("12345 floating point alignment exceptions")
    b = miner.add("0xdeadbeef floating point alignment exceptions")
    assert a.template_id == b.template_id


def test_add_many_matches_add_and_templates_lists_everything() -> None:
    lines = ["job 1 started", "job 2 started", "job 2 FAILED", "", "job 3 started"]
    one = TemplateMiner()
    singles = [one.add(x) for x in lines]
    many = TemplateMiner().add_many(iter(lines))
    assert singles == many
    assert all(isinstance(r, MatchResult) for r in many)
    templates = one.templates()
    assert [t for _, t, _ in templates] == ["job <NUM> started", "job <NUM> FAILED", ""]
    assert [c for _, _, c in templates] == [3, 1, 1]
    assert len(one) == 3
    with pytest.raises(AttributeError):
        many[0].count = 5  # type: ignore[misc]  # frozen


def test_match_looks_up_without_learning() -> None:
    miner = TemplateMiner()
    added = miner.add("user 17 logged in from 10.0.0.1")
    miner.add("user 18 logged in from 10.0.0.2")
    found = miner.match("user 99 logged in from 10.9.9.9")
    assert found == MatchResult(added.template_id, "user <NUM> logged in from <IP>", False, 2)
    assert miner.match("user 99 logged out") is None
    assert miner.match("something else entirely") is None
    assert sum(c for _, _, c in miner.templates()) == 2  # nothing was learned


def test_lru_limit_evicts_and_reuses_ids() -> None:
    miner = TemplateMiner(max_clusters=2)
    a = miner.add("alpha happened")
    miner.add("beta happened now")
    miner.add("gamma happened right now")  # evicts "alpha"
    assert len(miner) == 2
    again = miner.add("alpha happened")
    assert again.is_new and again.template_id == a.template_id  # same first template -> same id
    for i in range(20):
        miner.add(" ".join(["word"] * (i + 5)))
    assert len(miner) == 2
    assert len(miner._ids) <= 4  # metadata of evicted clusters is pruned


def test_same_first_template_twice_gets_distinct_ids() -> None:
    # A literal "<*>" never counts as similar, so with sim_th=1 the line cannot match its own template.
    miner = TemplateMiner(sim_th=1.0)
    a = miner.add("a <*> b")
    b = miner.add("a <*> b")
    assert a.is_new and b.is_new and a.template_id != b.template_id


@pytest.mark.parametrize(
    "kwargs",
    [{"sim_th": 1.5}, {"sim_th": -0.1}, {"depth": 2}, {"depth": 4.0}, {"max_clusters": 0}, {"max_clusters": True}],
)
def test_rejects_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TemplateMiner(**kwargs)


def test_concurrent_adds_are_consistent() -> None:
    messages, _ = load_loghub("Spark")
    miner = TemplateMiner()
    threads = [threading.Thread(target=miner.add_many, args=(messages[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(c for _, _, c in miner.templates()) == len(messages)
