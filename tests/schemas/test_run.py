"""The run contract: one ledger shape, the layout of a run, purpose-tagged draws."""

from __future__ import annotations

import pytest

import schemas
from schemas import ids, run


def test_ledger_sums_steps_and_checks_the_chain():
    steps = run.steps_from_counters({"clean:kept": 8, "clean:too_short": 2, "match:kept": 5, "match:no_match": 3,
                                     "other:kept": 99}, ("clean", "match"), 10)
    assert steps == [{"step": "clean", "in": 10, "kept": 8, "rejected": {"too_short": 2}},
                     {"step": "match", "in": 8, "kept": 5, "rejected": {"no_match": 3}}]
    led = run.ledger(run.CURATE, steps)
    assert (led["in"], led["kept"], led["rejected"], led["ledger_ok"]) == (10, 5, {"no_match": 3, "too_short": 2}, True)
    assert run.read_ledger(led).ok
    broken = [steps[0], {**steps[1], "in": 9, "rejected": {"no_match": 4}}]  # 9 = 5 + 4, but clean kept 8
    assert not run.ledger(run.CURATE, broken)["ledger_ok"]
    assert not run.read_ledger({**led, "kept": 6}).ok
    with pytest.raises(ValueError, match="missing"):
        run.read_ledger({"candidates": 3})


def test_layout_of_a_local_and_an_object_store_run(tmp_path):
    local = run.layout(str(tmp_path))
    assert local[run.SHARD] == str(tmp_path / "shards") and local[run.EVAL] == str(tmp_path / "eval" / "results.json")
    remote = run.layout("s3://bucket/runs/a")
    assert remote[run.CURATE] == "s3://bucket/runs/a/curate" and remote[run.TRAIN] == "s3://bucket/runs/a/train"
    assert [s.name for s in run.STAGES] == [run.EXTRACT, run.CURATE, run.DOWNLOAD, run.DEDUPE, run.SCORE, run.SHARD]
    assert [s.name for s in run.STAGES if s.optional] == [run.SCORE]


def test_draws_of_different_purposes_share_nothing():
    uid = schemas.uid("http://h/a.jpg", "a red star")
    values = {p: ids.hash64(p, 0, uid) for p in ids.PURPOSES}
    assert len(set(values.values())) == len(ids.PURPOSES)
    assert ids.hash64(ids.BALANCE, 0, uid) == ids.hash64(ids.BALANCE, 0, uid) != ids.hash64(ids.BALANCE, 1, uid)
    assert 0 <= ids.uniform(ids.SHARD_ORDER, 0, uid) < 1
    with pytest.raises(ValueError, match="unknown draw purpose"):
        ids.hash64("shuffle", 0, uid)
