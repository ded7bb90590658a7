"""`openwit score` on the FnApiRunner: scores equal open_clip's own computation, the exact
top fraction (radix select) and --min-score, the ledger and its rejects, identical outputs
at any worker count, shard carrying the score into SHARD_INDEX, validate's chain, and bad
input as one line."""

from __future__ import annotations

import json
import random
import struct
import tarfile
from pathlib import Path

import pytest

import schemas
from schemas import columns as C
from pipeline import dedupe, score, shard, validate
from tests.pipeline import downloaded


def random_model(folder: Path, seed: int = 0) -> Path:
    """An openwit-debug model with random weights, written as `openwit export` writes one."""
    from trainer import export, models

    net = models.create("openwit-debug", seed=seed)
    export.write(net.state_dict(), models.model_config("openwit-debug"), str(folder), {"model": "openwit-debug"})
    return folder


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    planted = downloaded.build(root)
    dedupe.run(["--input", str(root / "download"), "--output", str(root / "dedupe")])
    random_model(root / "model")
    return root, planted


def _argv(root, out, *extra, workers=False):
    """One process (each worker process would load torch and the model), or two workers."""
    mode = ["--direct_num_workers=2"] if workers else ["--direct_running_mode=in_memory"]
    return ["--keep", str(root / "dedupe"), "--images", str(root / "download"), "--model", str(root / "model"),
            "--output", str(out), *mode, *extra]


def _rows(folder, schema) -> list[dict]:
    return schemas.read_table(folder, schema).to_pylist()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def top(made):
    root, _ = made
    out = root / "top"
    stats = score.run(_argv(root, out, "--keep-top", "0.3", "--batch-size", "7"))
    return root, out, stats


def test_keep_top_is_exactly_the_best_fraction(top):
    root, out, stats = top
    scores = _rows(out / "scores", schemas.SCORES)
    keep_in = _rows(root / "dedupe" / "keep", schemas.KEEP)
    assert sorted(r[C.UID] for r in scores) == sorted(r[C.UID] for r in keep_in)
    n = len(scores)
    want = score.keep_count(n, 0.3)
    ranked = sorted(scores, key=lambda r: (r[C.CLIP_SCORE], int(r[C.UID][:8], 16)), reverse=True)
    kept = _rows(out / "keep", schemas.KEEP)
    assert len(kept) == want == stats["kept"] == int(n * 0.3 + 0.5)
    assert {r[C.UID] for r in kept} == {r[C.UID] for r in ranked[:want]}
    assert kept == sorted((r for r in keep_in if r[C.UID] in {k[C.UID] for k in kept}), key=lambda r: r[C.UID])
    rejects = _rows(out / "rejects", schemas.REJECT)
    assert {r[C.REASON] for r in rejects} == {"low_clip_score"}
    assert {r[C.UID] for r in rejects} == {r[C.UID] for r in ranked[want:]}
    assert stats["ledger_ok"] and stats["in"] == n and stats["rejected"] == {"low_clip_score": n - want}
    assert stats["threshold"] == pytest.approx(ranked[want - 1][C.CLIP_SCORE])
    assert sum(stats["histogram"].values()) == n


def test_scores_are_open_clips_cosine_of_image_and_caption(top):
    """Recompute three samples' scores with open_clip's loader, outside Beam and batches."""
    import torch
    from PIL import Image
    import io

    from trainer import export

    root, out, _ = top
    model, preprocess, tokenizer = export.load_exported(str(root / "model"))
    model.eval()
    rows = sorted(_rows(out / "scores", schemas.SCORES), key=lambda r: r[C.UID])[:3]
    for r in rows:
        with tarfile.open(root / "download" / "shards" / f"{r[C.SHARD]}.tar") as tar:
            image = tar.extractfile(f"{r[C.KEY]}.jpg").read()
            text = tar.extractfile(f"{r[C.KEY]}.txt").read().decode()
        with torch.no_grad():
            a = model.encode_image(preprocess(Image.open(io.BytesIO(image)).convert("RGB"))[None], normalize=True)
            b = model.encode_text(tokenizer([text]), normalize=True)
        assert float((a * b).sum()) == pytest.approx(r[C.CLIP_SCORE], abs=1e-5)


def test_min_score_and_no_filter(made, top, tmp_path):
    root, _, top_stats = top
    scores = {r[C.UID]: r[C.CLIP_SCORE] for r in _rows(top[1] / "scores", schemas.SCORES)}
    cut = sorted(scores.values())[len(scores) // 2]
    stats = score.run(_argv(root, tmp_path / "min", "--min-score", repr(cut)))
    kept = {r[C.UID] for r in _rows(tmp_path / "min" / "keep", schemas.KEEP)}
    assert kept == {u for u, s in scores.items() if s >= struct.unpack("f", struct.pack("f", cut))[0]}
    assert stats["threshold"] == cut and stats["ledger_ok"]
    stats = score.run(_argv(root, tmp_path / "all"))
    assert stats["kept"] == len(scores) and stats["rejected"] == {}
    assert _files(tmp_path / "all" / "scores") == _files(top[1] / "scores")  # the filter does not change a score


def test_same_bytes_in_one_process_or_two_workers(made, top, tmp_path):
    root, out, _ = top
    score.run(_argv(root, tmp_path / "one", "--keep-top", "0.3", "--batch-size", "7", workers=True))
    assert _files(tmp_path / "one") == _files(out)


def test_the_whole_download_output_with_its_broken_samples(made, tmp_path):
    root, planted = made
    stats = score.run(["--images", str(root / "download"), "--model", str(root / "model"),
                       "--output", str(tmp_path / "o"), "--direct_running_mode=in_memory"])
    rejects = {r[C.UID]: r[C.REASON] for r in _rows(tmp_path / "o" / "rejects", schemas.REJECT)}
    assert rejects == {planted["corrupt"][0]: "corrupt_sample", planted["missing"][0]: "missing_sample"}
    assert stats["ledger_ok"] and not (tmp_path / "o" / "keep").exists()
    assert stats["in"] == stats["kept"] + 2


def test_shard_carries_the_score_and_validate_chains_through_score(made, top, tmp_path):
    root, out, stats = top
    run = tmp_path / "run"
    run.mkdir()
    for stage, src in (("download", root / "download"), ("dedupe", root / "dedupe"), ("score", out)):
        (run / stage).symlink_to(src, target_is_directory=True)
    shard_stats = shard.run(["--keep", str(run / "score"), "--images", str(run / "download"),
                             "--curated", str(root / "curate"), "--output", str(run / "shards"),
                             "--samples-per-shard", "5"])
    assert shard_stats["in"] == stats["kept"] and shard_stats["kept"] == stats["kept"]
    index = _rows(run / "shards" / "index", schemas.SHARD_INDEX)
    scores = {r[C.UID]: r[C.CLIP_SCORE] for r in _rows(out / "scores", schemas.SCORES)}
    assert {r[C.UID]: r[C.CLIP_SCORE] for r in index} == {u: scores[u] for u in (r[C.UID] for r in index)}
    with tarfile.open(run / "shards" / "00000.tar") as tar:
        doc = json.loads(tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".json"))).read())
    assert doc[C.CLIP_SCORE] == pytest.approx(scores[doc[C.UID]], abs=1e-6)
    card = (run / "shards" / "README.md").read_text()
    assert "| score |" in card and "top 0.3" in card
    shard.run(["--keep", str(run / "score" / "keep"), "--images", str(run / "download"),  # the keep/ folder itself
               "--curated", str(root / "curate"), "--output", str(tmp_path / "inner"), "--samples-per-shard", "5"])
    assert _rows(tmp_path / "inner" / "index", schemas.SHARD_INDEX) == index
    checks = {c["check"]: c for c in validate.checks(str(run), 0.0, 1, 1)}
    assert checks["dedupe -> score"]["ok"] and checks["score -> shard"]["ok"] and checks["score ledger"]["ok"]
    assert "extract finished" in checks and "dedupe -> shard" not in checks


def test_radix_select_finds_the_kth_largest_key_exactly():
    rng = random.Random(5)
    for trial in range(40):
        n = rng.randrange(1, 300)
        scores = [rng.choice((0.25, -0.5, 0.0, -0.0, rng.uniform(-1, 1))) for _ in range(n)]
        uids = [f"{rng.getrandbits(128):032x}" for _ in range(n)]
        if trial % 5 == 0:
            uids = [u[:8] + "0" * 24 if i % 3 else u for i, u in enumerate(uids)]
        keys = [score.order_key(s, u) for s, u in zip(scores, uids)]
        fraction = rng.choice((0.3, 1.0, 0.5, 1 / n, rng.random()))
        state = score.first_state(n, fraction)
        for _ in range(4):
            digits = [d for k in keys for d in score.digit_of(k, state)]
            state = score.next_state(state, sorted({d: digits.count(d) for d in digits}.items()))
        k = score.keep_count(n, fraction)
        want = sorted(keys, reverse=True)[k - 1] if k else None
        assert score.threshold_of(state) == want
        if k:
            assert sum(key >= want for key in keys) == k  # keys are distinct here: exactly k
    ordered = sorted((rng.uniform(-1, 1) for _ in range(500)))
    keys = [score.order_key(s, "0" * 32) for s in ordered]
    assert keys == sorted(keys)
    assert score.order_key(-0.0, "0" * 8) < score.order_key(0.0, "0" * 8) < score.order_key(1e-30, "0" * 8)


@pytest.mark.parametrize("extra, words", [
    (["--keep-top", "0"], "--keep-top 0"),
    (["--keep-top", "1.5"], "fraction"),
    (["--min-score", "2"], "[-1, 1]"),
    (["--keep-top", "0.3", "--min-score", "0.1"], "give one"),
    (["--device", "tpu"], "cpu, cuda or cuda:N"),
    (["--batch-size", "0"], "must be positive"),
    (["--model", "ViT-B-32"], "--checkpoint"),
    (["--model", "ViT-B-32", "--checkpoint", "/nonexistent/ckpt.pt"], "no such file"),
    (["--model", "NoSuchNet", "--checkpoint", "/x.pt"], "not an open_clip architecture"),
    (["--keep-top", "0.3", "--no-such-flag"], "--no-such-flag"),
])
def test_bad_flags_are_one_line(made, tmp_path, extra, words):
    root, _ = made
    with pytest.raises(schemas.UserError) as e:
        score.run(_argv(root, tmp_path / "o", *extra))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_bad_inputs_are_one_line(made, tmp_path):
    root, _ = made
    cases = [
        (["--images", str(root / "download"), "--model", str(root / "model"), "--output", str(tmp_path / "o"),
          "--keep-top", "0.3"], "give --keep"),
        (["--images", str(root / "download"), "--model", str(tmp_path), "--output", str(tmp_path / "o")],
         "open_clip_config.json"),
        (["--keep", str(tmp_path / "none"), "--images", str(root / "download"), "--model", str(root / "model"),
          "--output", str(tmp_path / "o")], "none"),
        (["--keep", str(root / "download" / "downloaded"), "--images", str(root / "download"),
          "--model", str(root / "model"), "--output", str(tmp_path / "o")], "expected KEEP"),
        (["--images", str(tmp_path), "--model", str(root / "model"), "--output", str(tmp_path / "o")], "downloaded/"),
    ]
    for argv, words in cases:
        with pytest.raises(schemas.UserError) as e:
            score.run(argv)
        assert words in str(e.value) and "\n" not in str(e.value), (argv, str(e.value))


def test_cli_exit_2_on_bad_input(made, tmp_path, capsys):
    from pipeline.cli import main

    root, _ = made
    assert main(["score", "--images", str(root / "download"), "--model", str(root / "nope"),
                 "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("openwit score: error: --model") and "\n" not in err


def test_an_empty_keep_set_is_an_empty_result(made, tmp_path):
    import pyarrow as pa

    root, _ = made
    empty = tmp_path / "dedupe" / "keep" / "part-00000-of-00001.parquet"
    schemas.write_table(pa.Table.from_pylist([], schema=schemas.KEEP), empty, schemas.KEEP)
    stats = score.run(["--keep", str(tmp_path / "dedupe"), "--images", str(root / "download"), "--model",
                       str(root / "model"), "--output", str(tmp_path / "o"), "--keep-top", "0.3",
                       "--direct_running_mode=in_memory"])
    assert (stats["in"], stats["kept"], stats["rejected"], stats["ledger_ok"]) == (0, 0, {}, True)
    assert stats["threshold"] is None and _rows(tmp_path / "o" / "keep", schemas.KEEP) == []


def test_weights_that_do_not_load_are_one_line(made, tmp_path):
    import shutil

    root, _ = made
    broken = tmp_path / "model"
    shutil.copytree(root / "model", broken)
    weights = broken / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(schemas.UserError) as e:
        score.run(_argv(root, tmp_path / "o")[:4] + ["--model", str(broken), "--output", str(tmp_path / "o")])
    assert "--model" in str(e.value) and "does not load" in str(e.value) and "\n" not in str(e.value)
