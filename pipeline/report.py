"""`openwit report`: one self-contained HTML page about a run, figures embedded.

    openwit report RUN                       RUN/{extract,curate,download,dedupe,shards,train,eval}
    openwit report RUN --output report.html --samples 48
    openwit report --curate c/ --shards s/ --output r.html     (any subset of the stages)

The page is a single file (figures are PNG data URIs drawn with matplotlib's Agg backend,
sample images are the shards' own bytes), so it can be mailed, archived or opened from an
object store without a server. It holds no script. Sections whose stage was not run say so.

Figures: the funnel per stage with its reject reasons; per-query match counts before and
after balancing as a rank plot on log-log axes with t marked; the language mix; caption
lengths; image sizes; duplicate cluster sizes; a grid of sample images with captions;
training curves and the evaluation table when present.

Tables are read column by column and at most ``--max-rows`` rows each (files in order;
the stage outputs are hash-sharded, so the first files are a fair sample), so a report on
a 400M-pair run reads a bounded amount.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from schemas import columns as C
from pipeline import tario
from schemas import fileio
from pipeline.cli import Parser

SUMMARY = "write a self-contained HTML report of a run: funnel, queries, languages, captions, sizes, duplicates, samples, training, eval"
RUN = schemas.run
REPORT_FILE = RUN.REPORT_FILE
SHARD_STAGE = RUN.SHARD
FUNNEL_LABELS = {RUN.EXTRACT: ("image links", "candidates"), RUN.CURATE: ("", "curated pairs"),
                 RUN.DOWNLOAD: ("", "images downloaded"), RUN.DEDUPE: ("", "after dedupe"),
                 RUN.SCORE: ("", "after CLIP score"), RUN.SHARD: ("", "training samples")}
FIGURES = ("funnel", "queries", "languages", "captions", "sizes", "duplicates", "training")
PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _parser() -> Parser:
    p = Parser(prog="openwit report", description="Write one self-contained HTML page about a run "
               "(figures embedded; no server, no script).")
    p.add_argument("run", nargs="?", default=None,
                   help="the run's root folder, holding extract/ curate/ download/ dedupe/ shards/ train/ eval/")
    for s in RUN.STAGES:
        p.add_argument(f"--{s.folder}", default=None, help=f"the {s.name} output folder (default: RUN/{s.folder})")
    p.add_argument("--train", default=None, help="the training run folder (default: RUN/train)")
    p.add_argument("--eval", default=None, help="an `openwit eval --output` JSON file (default: RUN/eval/results.json)")
    p.add_argument("--output", default=None, help=f"the HTML file (default: RUN/{REPORT_FILE})")
    p.add_argument("--samples", type=int, default=24, help="sample images in the grid (default: 24)")
    p.add_argument("--max-rows", type=int, default=2_000_000, help="rows read per table at most (default: 2,000,000)")
    p.add_argument("--title", default=None, help="the page's title (default: the run folder's name)")
    return p


class _Capped:
    """Reads the named columns of a stage's Parquet folder, at most ``limit`` rows."""

    def __init__(self, limit: int):
        self.limit = limit
        self.notes: list[str] = []

    def read(self, folder: str, schema: pa.Schema, cols: list[str]) -> pa.Table | None:
        if not fileio.isdir(folder):
            return None
        try:
            files = schemas.parquet_files(folder)
        except schemas.SchemaError:
            return None
        tables, rows = [], 0
        for f in files:
            with fileio.open_read(f) as fh:
                try:
                    pf = pq.ParquetFile(fh)
                    schemas.check_metadata(pf.schema_arrow, schema, f)
                    tables.append(pf.read(columns=cols))
                except (pa.ArrowInvalid, OSError) as e:
                    raise schemas.UserError(f"{f}: not a readable Parquet file ({e})") from None
            rows += tables[-1].num_rows
            if rows >= self.limit:
                if f != files[-1]:
                    self.notes.append(f"{folder}: read the first {rows:,} rows ({files.index(f) + 1} of {len(files)} files)")
                break
        return pa.concat_tables(tables) if tables else None


@dataclass
class Run:
    """What the report shows, gathered from a run's outputs (None: that stage was not run)."""

    title: str
    paths: dict[str, str]
    stats: dict[str, dict] = field(default_factory=dict)
    query_counts: pa.Table | None = None
    t: float | None = None
    balanced_where: str = "curate"  # or "shard" when shard balanced last or online
    languages: Counter | None = None
    language_filtered: Counter | None = None
    index: pa.Table | None = None
    duplicate_sizes: dict[str, Counter] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_json(path: str) -> object:
    try:
        return fileio.read_json(path)
    except json.JSONDecodeError as e:
        raise schemas.UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None


def _paths(args) -> dict[str, str]:
    paths = RUN.layout(args.run) if args.run else {}
    for s in RUN.STAGES:
        paths[s.name] = getattr(args, s.folder) or paths.get(s.name, "")
    paths[RUN.TRAIN] = args.train or paths.get(RUN.TRAIN, "")
    paths[RUN.EVAL] = args.eval or paths.get(RUN.EVAL, "")
    return paths


def ledgers(paths: dict[str, str]) -> dict[str, dict]:
    """Each finished stage's ledger by stage name; stages not run are absent."""
    return RUN.read_ledgers(paths, fileio.read_json, fileio.exists)


def gather(paths: dict[str, str], title: str, max_rows: int) -> Run:
    run = Run(title=title, paths=paths, stats=ledgers(paths))
    reader = _Capped(max_rows)

    cur = paths[RUN.CURATE]
    if RUN.CURATE in run.stats:
        run.t = run.stats[RUN.CURATE].get("t")
        run.query_counts = reader.read(fileio.join(cur, "query_counts"), schemas.QUERY_COUNTS,
                                       [C.MATCH_COUNT, C.KEPT_COUNT])
        curated = reader.read(fileio.join(cur, "curated"), schemas.CURATED, [C.LANG])
        if curated is not None:
            run.languages = Counter(lang or "unknown" for lang in curated[C.LANG].to_pylist())
        rejects = reader.read(fileio.join(cur, "rejects"), schemas.REJECT, [C.REASON, C.DETAIL])
        if rejects is not None:
            run.language_filtered = Counter(d or "unknown" for r, d in zip(rejects[C.REASON].to_pylist(),
                                                                      rejects[C.DETAIL].to_pylist())
                                            if r == "language_filtered")
    if run.stats.get(SHARD_STAGE, {}).get("balance", "none") != "none":  # balanced after download and dedupe
        counts = reader.read(fileio.join(paths[SHARD_STAGE], "query_counts"), schemas.QUERY_COUNTS,
                             [C.MATCH_COUNT, C.KEPT_COUNT])
        if counts is not None:
            run.query_counts, run.t = counts, run.stats[SHARD_STAGE].get("t")
            run.balanced_where = f"shard (--balance {run.stats[SHARD_STAGE]['balance']})"
    if SHARD_STAGE in run.stats:
        run.index = reader.read(fileio.join(paths[SHARD_STAGE], "index"), schemas.SHARD_INDEX,
                                [C.SHARD, C.SHARD_POSITION, C.TAR_OFFSET, C.TAR_BYTES, C.TEXT,
                                 C.ORIGINAL_WIDTH, C.ORIGINAL_HEIGHT, C.WIDTH, C.HEIGHT])
        if run.index is not None:
            run.index = run.index.sort_by([(C.SHARD, "ascending"), (C.SHARD_POSITION, "ascending")])
    if RUN.DEDUPE in run.stats:
        near = run.stats[RUN.DEDUPE].get("component_sizes") or {}
        run.duplicate_sizes["near-duplicate components"] = Counter({int(k): int(v) for k, v in near.items()})
        rejects = reader.read(fileio.join(paths[RUN.DEDUPE], "rejects"), schemas.REJECT, [C.REASON, C.DUPLICATE_OF])
        if rejects is not None:
            dups = Counter(d for r, d in zip(rejects[C.REASON].to_pylist(), rejects[C.DUPLICATE_OF].to_pylist())
                           if r == "exact_duplicate" and d)
            run.duplicate_sizes["exact-duplicate groups"] = Counter(n + 1 for n in dups.values())
    metrics_path = fileio.join(paths[RUN.TRAIN], "metrics.jsonl") if paths[RUN.TRAIN] else ""
    if metrics_path and fileio.isfile(metrics_path):
        for n, line in enumerate(fileio.read_text(metrics_path).splitlines(), 1):
            if line.strip():
                try:
                    run.metrics.append(json.loads(line))
                except json.JSONDecodeError:
                    raise schemas.UserError(f"{metrics_path}, line {n}: not valid JSON") from None
    if paths[RUN.EVAL] and fileio.isfile(paths[RUN.EVAL]):
        evals = _read_json(paths[RUN.EVAL])
        if not isinstance(evals, list) or not all(isinstance(r, dict) and "task" in r for r in evals):
            raise schemas.UserError(f"{paths['eval']}: not an `openwit eval --output` file (a JSON list of records)")
        run.evals = evals
    run.notes = reader.notes
    return run


# -- figures -----------------------------------------------------------------------------


def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def funnel_rows(stats: dict[str, dict]) -> list[dict]:
    """One row per stage that ran: in, kept, rejects by reason, and whether the ledger adds up."""
    rows = []
    for s in RUN.STAGES:
        if s.name not in stats:
            continue
        ledger = RUN.read_ledger(stats[s.name])
        rows.append({C.STAGE: s.name, "in": ledger.n_in, "kept": ledger.kept, "rejected": ledger.rejected,
                     "ok": ledger.ok})
    return rows


def fig_funnel(rows: list[dict]) -> bytes:
    labels, values = [], []
    for r in rows:
        before, after = FUNNEL_LABELS[r[C.STAGE]]
        if before:
            labels.append(before)
            values.append(r["in"])
        labels.append(after)
        values.append(r["kept"])
    reasons = [(r[C.STAGE], reason, n) for r in rows for reason, n in sorted(r["rejected"].items(), key=lambda x: -x[1])]
    fig = _figure(12, max(3.2, 0.28 * len(reasons) + 1.2))
    left, right = fig.subplots(1, 2, width_ratios=(1, 1.3))
    y = range(len(values))
    left.barh(y, values, color=PALETTE[0])
    left.set_yticks(list(y), labels)
    left.invert_yaxis()
    top = max(values) if values else 1
    for i, v in enumerate(values):
        left.text(v + top * 0.01, i, f"{v:,}" + (f"  ({v / values[0]:.0%})" if i and values[0] else ""),
                  va="center", fontsize=8)
    left.set_xlim(0, top * 1.35)
    left.set_title("records kept at each stage")
    left.set_xlabel("records")
    stages = [r[C.STAGE] for r in rows]
    yr = range(len(reasons))
    right.barh(yr, [n for *_, n in reasons], color=[PALETTE[stages.index(s) % len(PALETTE)] for s, *_ in reasons])
    right.set_yticks(list(yr), [f"{s}: {reason}" for s, reason, _ in reasons], fontsize=8)
    right.invert_yaxis()
    for i, (*_, n) in enumerate(reasons):
        right.text(n, i, f" {n:,}", va="center", fontsize=7)
    right.set_xscale("log")
    right.set_title("rejected, by stage and reason code")
    right.set_xlabel("records (log)")
    return _png(fig)


def fig_queries(counts: pa.Table, t: float | None) -> bytes:
    import numpy as np

    before = np.sort(counts[C.MATCH_COUNT].to_numpy().astype(float))[::-1]
    after = np.sort(counts[C.KEPT_COUNT].to_numpy().astype(float))[::-1]
    before, after = before[before > 0], after[after > 0]
    fig = _figure(7.5, 4.2)
    ax = fig.subplots()
    ax.loglog(np.arange(1, len(before) + 1), before, label=f"matches before balancing ({len(before):,} queries)",
              color=PALETTE[0], lw=1.6)
    ax.loglog(np.arange(1, len(after) + 1), after, label="kept after balancing", color=PALETTE[1], lw=1.6)
    if t:
        ax.axhline(t, color=PALETTE[3], ls="--", lw=1)
        ax.text(1, t * 1.08, f"t = {t:,.0f}", color=PALETTE[3], fontsize=9)
        head = int((before > t).sum())
        ax.set_title(f"per-query match counts by rank: {head:,} head queries above t")
    else:
        ax.set_title("per-query match counts by rank")
    ax.set_xlabel("query rank")
    ax.set_ylabel("texts matching the query")
    ax.legend(fontsize=8)
    return _png(fig)


def fig_languages(kept: Counter, filtered: Counter) -> bytes:
    total = kept + filtered
    langs = [lang for lang, _ in total.most_common(15)]
    fig = _figure(7.5, 3.6)
    ax = fig.subplots()
    x = range(len(langs))
    a = [kept.get(lang, 0) for lang in langs]
    b = [filtered.get(lang, 0) for lang in langs]
    ax.bar(x, a, color=PALETTE[2], label="kept")
    ax.bar(x, b, bottom=a, color=PALETTE[7], label="filtered out by language")
    ax.set_xticks(list(x), langs)
    ax.set_ylabel("texts")
    n = sum(total.values())
    other = n - sum(a) - sum(b)
    ax.set_title(f"language of the texts that reached the language step ({n:,}"
                 + (f"; {other:,} in other languages" if other else "") + ")")
    ax.legend(fontsize=8)
    return _png(fig)


def fig_captions(texts: list[str]) -> bytes:
    import numpy as np

    chars = np.array([len(t) for t in texts])
    words = np.array([len(t.split()) for t in texts])
    fig = _figure(10, 3.4)
    a, b = fig.subplots(1, 2)
    # the long tail (kilobyte alts) would squeeze the body of the histogram: show up to the
    # 99th percentile and say how many are longer
    c_cap, w_cap = max(1, int(np.percentile(chars, 99))), max(1, int(np.percentile(words, 99)))
    a.hist(chars[chars <= c_cap], bins=min(60, max(10, c_cap)), color=PALETTE[0])
    a.set_xlabel("characters" + (f" ({int((chars > c_cap).sum()):,} longer than {c_cap:,} not shown; "
                                 f"longest {chars.max():,})" if chars.max() > c_cap else ""))
    a.set_title(f"caption length: median {np.median(chars):.0f} characters")
    b.hist(words[words <= w_cap], bins=np.arange(0.5, w_cap + 1.5) if w_cap <= 60 else 60, color=PALETTE[1])
    b.set_xlabel("words" + (f" ({int((words > w_cap).sum()):,} longer than {w_cap} not shown)"
                            if words.max() > w_cap else ""))
    b.set_title(f"median {np.median(words):.0f} words")
    for ax in (a, b):
        ax.set_ylabel("samples")
    return _png(fig)


def fig_sizes(index: pa.Table) -> bytes:
    w = index[C.ORIGINAL_WIDTH].fill_null(index[C.WIDTH]).to_numpy().astype(float)
    h = index[C.ORIGINAL_HEIGHT].fill_null(index[C.HEIGHT]).to_numpy().astype(float)
    ok = (w > 0) & (h > 0)
    fig = _figure(6, 5)
    ax = fig.subplots()
    ax.scatter(w[ok], h[ok], s=6, alpha=0.35, color=PALETTE[0], edgecolors="none")
    if ok.any():
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("original width (px)")
    ax.set_ylabel("original height (px)")
    ax.set_title(f"image sizes before resizing ({int(ok.sum()):,} samples)")
    if ok.any():
        lo, hi = min(w[ok].min(), h[ok].min()), max(w[ok].max(), h[ok].max())
        ax.plot([lo, hi], [lo, hi], color=PALETTE[7], lw=0.8, ls=":")
    return _png(fig)


def fig_duplicates(sizes: dict[str, Counter]) -> bytes:
    fig = _figure(7.5, 3.6)
    ax = fig.subplots()
    width = 0.8 / max(1, len(sizes))
    for i, (name, counts) in enumerate(sizes.items()):
        xs = sorted(counts)
        ax.bar([x + (i - (len(sizes) - 1) / 2) * width for x in xs], [counts[x] for x in xs], width=width,
               color=PALETTE[i], label=f"{name} ({sum(counts.values()):,})")
    ax.set_yscale("log")
    ax.set_xlabel("cluster size (images)")
    ax.set_ylabel("clusters (log)")
    ax.set_title("duplicate clusters: a size-1 component is an image with no near-duplicate")
    ax.legend(fontsize=8)
    return _png(fig)


def fig_training(metrics: list[dict]) -> bytes:
    train = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "eval" in m]
    panels = 2 + bool(evals)
    fig = _figure(4.2 * panels, 3.4)
    axes = fig.subplots(1, panels)
    steps = [m["step"] for m in train]
    mark = "o" if len(train) < 20 else None
    axes[0].plot(steps, [m["loss"] for m in train], color=PALETTE[0], marker=mark, ms=3)
    axes[0].set_title("contrastive loss")
    axes[1].plot(steps, [m.get("lr", float("nan")) for m in train], color=PALETTE[1], marker=mark, ms=3)
    axes[1].set_title("learning rate")
    if evals:
        names = sorted({k for m in evals for k in m["eval"]})
        for i, name in enumerate(names):
            axes[2].plot([m["step"] for m in evals], [m["eval"].get(name, float("nan")) for m in evals],
                         marker="o", ms=3, label=name, color=PALETTE[i % len(PALETTE)])
        axes[2].set_title("evaluation during training")
        axes[2].set_ylim(0, 1)
        axes[2].legend(fontsize=6)
    for ax in axes:
        ax.set_xlabel("step")
    return _png(fig)


# -- page --------------------------------------------------------------------------------


def _img(data: bytes, mime: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode()}">'


def _figure_html(name: str, png: bytes, caption: str) -> str:
    return (f'<figure class="plot" id="fig-{name}">{_img(png, "image/png", caption)}'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


LANGUAGE_ROWS = 30  # languages shown in the per-language table, most identified first


def language_rows(curate_stats: dict) -> list[list[str]]:
    """The per-language sections of curate's ledger as table rows (escaped HTML cells)."""
    sections = curate_stats.get("by_language") or {}
    rows = []
    for lang, s in sorted(sections.items(), key=lambda kv: (-kv[1]["in"], kv[0]))[:LANGUAGE_ROWS]:
        steps = {x["step"]: x for x in s["steps"]}
        dropped = ", ".join(f"{html.escape(k)} {v:,}" for k, v in sorted(steps["language"]["rejected"].items()))
        ledger = '<span class="ok">closes</span>' if s["ledger_ok"] else '<span class="bad">does not add up</span>'
        rows.append([html.escape(lang), "&ndash;" if s.get("t") is None else f"{s['t']:,.1f}", f"{s['in']:,}",
                     dropped or "&ndash;", f"{steps['balance']['rejected'].get('balanced_out', 0):,}",
                     f"{s['kept']:,}", ledger])
    if len(sections) > LANGUAGE_ROWS:
        rows.append([f"&hellip; {len(sections) - LANGUAGE_ROWS:,} more (curate_stats.json)", "", "", "", "", "", ""])
    return rows


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _sample_images(run: Run, n: int) -> list[tuple[bytes, str, str]]:
    """(image bytes, mime type, caption) of the first ``n`` samples in shard order."""
    if run.index is None or n <= 0:
        return []
    out = []
    rows = run.index.slice(0, n).to_pylist()
    handles: dict[str, object] = {}
    try:
        for r in rows:
            tar = fileio.join(run.paths[SHARD_STAGE], f"{r[C.SHARD]}.tar")
            if tar not in handles:
                handles[tar] = fileio.open_ranged(tar)  # a few samples each: no read-ahead
            fh = handles[tar]
            fh.seek(r[C.TAR_OFFSET])
            members = dict(tario.iter_members(io.BytesIO(fh.read(r[C.TAR_BYTES]))))
            for name, data in members.items():
                ext = name.rsplit(".", 1)[-1].lower()
                if ext in ("jpg", "jpeg", "png", "webp") and data:
                    mime = "image/jpeg" if ext in ("jpg", "jpeg") else f"image/{ext}"
                    out.append((data, mime, r[C.TEXT]))
                    break
    finally:
        for fh in handles.values():
            fh.close()
    return out


# `openwit eval` records name tasks as CLIP_benchmark does; records written before it did
# carry openwit's short names
ZEROSHOT_TASKS = ("zeroshot_classification", "zeroshot")
RETRIEVAL_TASKS = ("zeroshot_retrieval", "retrieval")


def _eval_rows(evals: list[dict]) -> list[list[str]]:
    rows = []
    for r in evals:
        name = fileio.basename(str(r.get("dataset", "")))
        if r["task"] in RETRIEVAL_TASKS:
            figures = (f"T&rarr;I R@1/5/10 {r['text_to_image_R@1']:.3f} / {r['text_to_image_R@5']:.3f} / "
                       f"{r['text_to_image_R@10']:.3f}; I&rarr;T R@5 {r['image_to_text_R@5']:.3f}")
            n = f"{r.get('images', 0):,} images, {r.get('texts', 0):,} texts"
        else:
            figures = f"top-1 {r['top1']:.3f}" + (f", top-5 {r['top5']:.3f}" if "top5" in r else "")
            if "mean_per_class_recall" in r:
                figures += f", mean per-class recall {r['mean_per_class_recall']:.3f}"
            n = f"{r.get('samples', 0):,} samples, {r.get('classes', 0)} classes"
        rows.append([html.escape(name), html.escape(r["task"]), figures, n])
    return rows


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1260px;padding:0 24px 48px;
color:#222;background:#fff}
h1{margin:24px 0 4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure.plot{margin:12px 0}figure.plot img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:13px}
.missing{color:#8a6d3b;background:#fcf8e3;padding:6px 10px;border-radius:4px}
.bad{color:#a94442;font-weight:bold}.ok{color:#3c763d}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:12px}
.grid figure{margin:0;font-size:12px}.grid img{width:100%;height:auto;image-rendering:auto;border:1px solid #eee}
"""


def _summary(run: Run, rows: list[dict]) -> str:
    items = []
    if rows:
        first, last = rows[0], rows[-1]
        items.append(f"{last['kept']:,} {FUNNEL_LABELS[last[C.STAGE]][1]} from {first['in']:,} "
                     f"{FUNNEL_LABELS[first[C.STAGE]][0] or 'records'} ({last['kept'] / max(1, first['in']):.1%}), "
                     f"stages run: {', '.join(r[C.STAGE] for r in rows)}")
        bad = [r[C.STAGE] for r in rows if not r["ok"]]
        items.append(f'<span class="bad">ledger does not add up: {", ".join(bad)}</span>' if bad
                     else '<span class="ok">every ledger adds up (in = kept + rejected)</span>')
    shard = run.stats.get(SHARD_STAGE)
    if shard:
        items.append(f"{shard.get('shards', 0):,} shards, {shard.get('bytes', 0) / 1e6:,.1f} MB")
    train = run.metrics and [m for m in run.metrics if "loss" in m]
    if train:
        items.append(f"training: {train[-1]['step']:,} steps, final loss {train[-1]['loss']:.3f}")
    for r in run.evals:
        if r["task"] in ZEROSHOT_TASKS:
            items.append(f"zero-shot {html.escape(fileio.basename(str(r.get('dataset', ''))))}: top-1 {r['top1']:.1%}")
    return '<ul class="summary">' + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""


def render(run: Run, samples: int) -> tuple[str, list[str]]:
    """The page and the ids of the figures it holds."""
    parts, figures = [], []

    def add(name: str, png: bytes, caption: str) -> None:
        parts.append(_figure_html(name, png, caption))
        figures.append(name)

    rows = funnel_rows(run.stats)
    parts.append(_summary(run, rows))
    parts.append("<h2>Funnel</h2>")
    if rows:
        add("funnel", fig_funnel(rows), "Records kept at each stage (left) and rejected, by reason code (right).")
        table = []
        for r in rows:
            reasons = ", ".join(f"{html.escape(k)} {v:,}" for k, v in sorted(r["rejected"].items(), key=lambda x: -x[1]))
            ledger = '<span class="ok">in = kept + rejected</span>' if r["ok"] else '<span class="bad">does not add up</span>'
            table.append([r[C.STAGE], f"{r['in']:,}", f"{r['kept']:,}", f"{sum(r['rejected'].values()):,}",
                          reasons or "&ndash;", ledger])
        parts.append(_table([C.STAGE, "in", "kept", "rejected", "reasons", "ledger"], table, "ledger"))
    else:
        parts.append(_missing("No stage ledger found: no stage of this run has finished."))

    parts.append("<h2>Queries and balancing</h2>")
    if run.query_counts is not None and run.query_counts.num_rows:
        add("queries", fig_queries(run.query_counts, run.t),
            f"Per-query match counts before and after balancing in {run.balanced_where}, by rank (log-log); "
            "the dashed line is t" + (" (English's; the table under Languages gives each language's)."
                                      if run.stats.get(RUN.CURATE, {}).get("worldwide") else "."))
    else:
        parts.append(_missing("The curate stage was not run (no query counts)."))

    parts.append("<h2>Languages</h2>")
    if run.languages is not None and (run.languages or run.language_filtered):
        add("languages", fig_languages(run.languages, run.language_filtered or Counter()),
            "Detected language of the curated texts and of those the language step removed.")
        lang_rows = language_rows(run.stats.get(RUN.CURATE, {}))
        if lang_rows:
            worldwide = run.stats[RUN.CURATE].get("worldwide")
            parts.append("<p>Curate's ledger per language: the texts language id gave each language, what the "
                         "language step removed, what balancing removed, and what was curated"
                         + (" (worldwide: each language balanced at its own t, English's given and the others' "
                            "keeping English's tail share)." if worldwide else ".") + "</p>")
            parts.append(_table(["language", "t", "identified", "language step removed", "balanced out", "curated",
                                 "ledger"], lang_rows, "languages"))
    else:
        parts.append(_missing("The curate stage was not run (no language ids)."))

    texts = run.index[C.TEXT].to_pylist() if run.index is not None and run.index.num_rows else []
    parts.append("<h2>Captions and images</h2>")
    if texts:
        add("captions", fig_captions(texts), "Caption lengths of the training samples.")
        add("sizes", fig_sizes(run.index), "Original size of each training image (log-log; dotted: square).")
    else:
        parts.append(_missing("The shard stage was not run (no training samples)."))

    parts.append("<h2>Duplicates</h2>")
    if any(run.duplicate_sizes.values()):
        add("duplicates", fig_duplicates(run.duplicate_sizes),
            "Sizes of exact-duplicate groups and of near-duplicate components among the downloaded images.")
    else:
        parts.append(_missing("The dedupe stage was not run."))

    parts.append("<h2>Samples</h2>")
    images = _sample_images(run, samples)
    if images:
        cells = "".join(f'<figure class="sample">{_img(data, mime, text)}<figcaption>{html.escape(text)}</figcaption></figure>'
                        for data, mime, text in images)
        parts.append(f'<div class="grid" id="samples">{cells}</div>')
    else:
        parts.append(_missing("No training shards to show samples from."))

    parts.append("<h2>Training</h2>")
    if any("loss" in m for m in run.metrics):
        add("training", fig_training(run.metrics), "Loss, learning rate and evaluation during training, by step.")
    else:
        parts.append(_missing("No training run (no metrics.jsonl)."))

    parts.append("<h2>Evaluation</h2>")
    if run.evals:
        head = ["dataset", "task", "figures", "size"]  # not-a-column
        parts.append(_table(head, _eval_rows(run.evals), "eval"))
    else:
        parts.append(_missing("No evaluation results."))

    if run.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in run.notes) + "</ul>")
    where = ", ".join(f"{k}: {html.escape(v)}" for k, v in run.paths.items() if v)
    head = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(run.title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>'
            f"<h1>{html.escape(run.title)}</h1><p class=\"sub\">openwit run report &middot; {where}</p>")
    return head + "".join(parts) + "</body></html>\n", figures


def write(paths: dict[str, str], output: str, title: str, samples: int = 24, max_rows: int = 2_000_000,
          where: str = "the given folders") -> dict:
    """Gather, render and atomically write the report; returns what it wrote. A run with no
    stage ledger at all (``where``: how to name it) is refused before anything is written."""
    t0 = time.perf_counter()
    run = gather(paths, title, max_rows)
    if not run.stats:
        raise schemas.UserError(f"{where}: no stage ledger found (no openwit output here)")
    page, figures = render(run, samples)
    with fileio.atomic_local(output) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(page)
    return {"output": output, "figures": figures, "bytes": len(page.encode()), "stages": list(run.stats),
            "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.samples < 0 or args.max_rows <= 0:
        raise schemas.UserError("--samples must be >= 0 and --max-rows > 0")
    if args.run is not None and not fileio.isdir(args.run):
        raise schemas.UserError(f"{args.run}: no such run folder")
    paths = _paths(args)
    if not any(paths.values()):
        raise schemas.UserError("give a run folder, or the stage folders (--curate, --shards, ...)")
    output = args.output or (fileio.join(args.run, REPORT_FILE) if args.run else None)
    if output is None:
        raise schemas.UserError("--output is required without a run folder")
    title = args.title or f"openwit run: {fileio.basename(args.run or output)}"
    done = write(paths, output, title, args.samples, args.max_rows, where=args.run or "the given folders")
    print(f"report: {output} ({done['bytes'] / 1e6:.1f} MB, {len(done['figures'])} figures: "
          f"{', '.join(done['figures'])}; stages: {', '.join(done['stages'])}) in {done['seconds']:.1f}s")
    return 0
