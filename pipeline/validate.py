"""`openwit validate`: the gate between the data stages and training.

    openwit validate RUN [--min-download-success 0.5] [--min-shards 1] [--min-samples 1]

Reads the ledgers a run's stages wrote under RUN/{extract,curate,download,dedupe,shards}
and checks, in order:

- every stage finished (its ledger exists; score only where it ran);
- every ledger adds up: in = kept + sum(rejected), for the stage and for each of its steps,
  and each step starts with what the one before it kept;
- the stages chain: each stage's input is exactly what the one before it kept (a stage
  rerun on other input, or a stale output folder, breaks this);
- the download success rate (kept / in) is at least --min-download-success;
- there are at least --min-shards shards and --min-samples samples, and every shard the
  ledger lists is on disk with the sample count it declares.

Every check is printed with its values and written to RUN/validate.json. On a failure the
command exits 1 with one line on stderr that names the first failing check and its values
(then the count of others), so a scheduler's log shows why the run stopped.
"""

from __future__ import annotations

import sys

import schemas
from schemas import fileio
from schemas import run as RUN
from pipeline.cli import Parser

SUMMARY = "check a run's ledgers, download success rate and shards before training (the gate)"
RESULT_FILE = "validate.json"


def _parser() -> Parser:
    p = Parser(prog="openwit validate", description="Check a run's stage ledgers and thresholds before training.")
    p.add_argument("run", help="the run's root folder (extract/ curate/ download/ dedupe/ shards/)")
    p.add_argument("--min-download-success", type=float, default=0.5,
                   help="least share of curated urls downloaded (default: 0.5)")
    p.add_argument("--min-shards", type=int, default=1, help="least number of training shards (default: 1)")
    p.add_argument("--min-samples", type=int, default=1, help="least number of training samples (default: 1)")
    return p


def checks(run: str, min_download_success: float, min_shards: int, min_samples: int) -> list[dict]:
    """Every check as {check, ok, values}, in the order they are listed above."""
    paths = RUN.layout(run)
    stats = RUN.read_ledgers(paths, fileio.read_json, fileio.exists)
    out: list[dict] = []

    def check(name: str, ok: bool, values: str) -> None:
        out.append({"check": name, "ok": bool(ok), "values": values})

    for s in RUN.STAGES:
        if s.optional and s.name not in stats:
            continue
        check(f"{s.name} finished", s.name in stats,
              f"{s.folder}/{s.ledger} {'found' if s.name in stats else 'missing'}")
    rows = {s.name: RUN.read_ledger(stats[s.name]) for s in RUN.STAGES if s.name in stats}
    for stage, r in rows.items():
        rejected = sum(r.rejected.values())
        check(f"{stage} ledger", r.n_in == r.kept + rejected,
              f"in {r.n_in:,}, kept {r.kept:,} + rejected {rejected:,} = {r.kept + rejected:,}")
        for i, step in enumerate(r.steps):
            rej = sum(step.get("rejected", {}).values())
            ok = step["in"] == step["kept"] + rej and (i == 0 or step["in"] == r.steps[i - 1]["kept"])
            prev = f"; previous step kept {r.steps[i - 1]['kept']:,}" if i else ""
            check(f"{stage} step {step['step']} ledger", ok,
                  f"in {step['in']:,}, kept {step['kept']:,} + rejected {rej:,}{prev}")
    order = [s.name for s in RUN.STAGES if not s.optional or s.name in rows]
    for before, after in zip(order, order[1:]):
        if before in rows and after in rows:
            check(f"{before} -> {after}", rows[before].kept == rows[after].n_in,
                  f"{before} kept {rows[before].kept:,}, {after} read {rows[after].n_in:,}")
    if RUN.DOWNLOAD in rows:
        d = rows[RUN.DOWNLOAD]
        rate = d.kept / d.n_in if d.n_in else 0.0
        check("download success rate", rate >= min_download_success,
              f"{rate:.1%} ({d.kept:,} of {d.n_in:,}), threshold {min_download_success:.1%}")
    if RUN.SHARD in stats:
        s = stats[RUN.SHARD]
        n_shards, n_samples = int(s.get("shards", 0)), int(s.get("kept", 0))
        check("shard count", n_shards >= min_shards, f"{n_shards:,} shards, threshold {min_shards:,}")
        check("sample count", n_samples >= min_samples, f"{n_samples:,} samples, threshold {min_samples:,}")
        sizes_path = fileio.join(paths[RUN.SHARD], "sizes.json")
        sizes = fileio.read_json(sizes_path) if fileio.exists(sizes_path) else {}
        on_disk = set(fileio.listdir(paths[RUN.SHARD]))
        missing = sorted(n for n in sizes if n not in on_disk)
        declared = sum(int(v) for v in sizes.values())
        check("shards on disk", bool(sizes) and not missing and len(sizes) == n_shards and declared == n_samples,
              f"{len(sizes):,} listed in sizes.json ({declared:,} samples), {len(missing)} missing"
              + (f" (first: {missing[0]})" if missing else ""))
    return out


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not fileio.isdir(args.run):
        raise schemas.UserError(f"{args.run}: no such run folder")
    if not 0 <= args.min_download_success <= 1:
        raise schemas.UserError("--min-download-success must be between 0 and 1")
    results = checks(args.run, args.min_download_success, args.min_shards, args.min_samples)
    result_path = fileio.join(args.run, RESULT_FILE)
    fileio.write_json(result_path, {"checks": results, "ok": all(c["ok"] for c in results)})
    for c in results:
        print(f"  {'ok  ' if c['ok'] else 'FAIL'} {c['check']:<32} {c['values']}")
    failed = [c for c in results if not c["ok"]]
    if failed:
        more = f" (and {len(failed) - 1} more failed check(s); see {result_path})" if len(failed) > 1 else ""
        print(f"openwit validate: check '{failed[0]['check']}' failed: {failed[0]['values']}{more}", file=sys.stderr)
        return 1
    print(f"validate: all {len(results)} checks passed; {result_path}")
    return 0
