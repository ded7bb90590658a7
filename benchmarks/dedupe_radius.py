"""Choosing the near-duplicate radius r: precision and recall of pHash pairs at r = 0..12 on
the synthetic crawl's labelled near-duplicates, as downloaded.

Ground truth: two downloaded images show the same picture when their specs are equal once
the near-duplicate variant (crop, resize, re-encode, brighten) and the file format are
dropped; the synthetic world draws a fresh 32-bit jitter for every clean image, so
distinct pictures never share a spec. Pairs of byte-identical images (same sha256) are
exact duplicates, removed before the near-duplicate search, and left out here.

    python -m benchmarks.dedupe_radius --download DEMO/download --crawl DEMO/crawl

A pair is predicted when its pHash distance is <= r; precision = true predicted pairs /
predicted pairs, recall = true predicted pairs / true pairs. Component-level figures
(what dedupe removes) are printed too: images removed, and how many of those removals were
of an image whose picture had no other copy (a wrong removal).
"""

from __future__ import annotations

import argparse
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np

import schemas
from schemas import columns as C
from pipeline import imagehashes, neardup
from pipeline.synth import crawl, world


def load(download: Path, crawl_dir: Path, strip: bool = True) -> tuple[np.ndarray, list[str], list[str], list[bool]]:
    """(pHash, picture id, sha256, is an evaluation image) of every downloaded image."""
    truth = schemas.read_table(crawl_dir / crawl.GROUND_TRUTH_DIR, schemas.GROUND_TRUTH)
    picture, is_eval = {}, {}
    for url, token, kind in zip(truth[C.URL].to_pylist(), truth[C.IMAGE_TOKEN].to_pylist(), truth[C.KIND].to_pylist()):
        if token:
            picture[url] = world.parse_token(token).original().token()
            is_eval[url] = kind == "eval_item"
    down = schemas.read_table(download / "downloaded", schemas.DOWNLOADED)
    rows = {(r[C.SHARD], r[C.KEY]): r for r in down.to_pylist() if r[C.KEY]}
    hashes, pics, shas, evals = [], [], [], []
    for tar_path in sorted((download / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if not m.name.endswith(".jpg"):
                    continue
                row = rows.get((tar_path.stem, m.name.split(".")[0]))
                if row is None or row[C.URL] not in picture:
                    continue
                original = (row[C.ORIGINAL_WIDTH], row[C.ORIGINAL_HEIGHT]) if strip else None
                hashes.append(imagehashes.hashes(tar.extractfile(m).read(), original)[0])
                pics.append(picture[row[C.URL]])
                shas.append(row[C.SHA256])
                evals.append(is_eval[row[C.URL]])
    return np.array(hashes, dtype=np.uint64), pics, shas, evals


def eval_table(hashes: np.ndarray, evals: list[bool], crawl_dir: Path, radii: range) -> list[dict]:
    """Decontamination at each r: training images within r of an evaluation image (the
    crawl's eval/heldout PNGs) against the images that really are evaluation images."""
    files = sorted((crawl_dir / crawl.EVAL_IMAGES_DIR).glob("*.png"))
    ev = np.array([imagehashes.hashes(f.read_bytes())[0] for f in files], dtype=np.uint64)
    truth = np.array(evals)
    nearest = np.bitwise_count(hashes[:, None] ^ ev[None, :]).min(axis=1)
    out = []
    for r in radii:
        flagged = nearest <= r
        tp = int((flagged & truth).sum())
        out.append({"r": r, "flagged": int(flagged.sum()), "true_positive": tp, "eval_images_in_pool": int(truth.sum()),
                    "precision": tp / max(int(flagged.sum()), 1), "recall": tp / max(int(truth.sum()), 1)})
    return out


def table(hashes: np.ndarray, pics: list[str], shas: list[str], radii: range) -> list[dict]:
    pic_id = {p: i for i, p in enumerate(sorted(set(pics)))}
    pid = np.array([pic_id[p] for p in pics])
    sid = {s: i for i, s in enumerate(sorted(set(shas)))}
    sh = np.array([sid[s] for s in shas])
    n = len(hashes)
    # pairs of distinct-byte images: distance and truth
    dist_true, dist_false = Counter(), Counter()
    for s in range(0, n, 1024):
        d = np.bitwise_count(hashes[s:s + 1024, None] ^ hashes[None, :])
        i, j = np.nonzero(d <= max(radii))
        keep = (s + i < j) & (sh[s + i] != sh[j])
        same = pid[s + i[keep]] == pid[j[keep]]
        dist = d[i[keep], j[keep]]
        dist_true.update(dist[same].tolist())
        dist_false.update(dist[~same].tolist())
    # all true pairs (any distance), distinct bytes
    true_pairs = 0
    for p in np.unique(pid):
        members = sh[pid == p]
        c = Counter(members.tolist())
        k = len(members)
        true_pairs += k * (k - 1) // 2 - sum(v * (v - 1) // 2 for v in c.values())
    out = []
    for r in radii:
        tp = sum(v for d, v in dist_true.items() if d <= r)
        fp = sum(v for d, v in dist_false.items() if d <= r)
        out.append({"r": r, "pairs_predicted": tp + fp, "true_positive": tp, "true_pairs": true_pairs,
                    "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / true_pairs if true_pairs else 1.0,
                    **_removals(hashes, pid, sh, r)})
    return out


def _removals(hashes: np.ndarray, pid: np.ndarray, sh: np.ndarray, r: int) -> dict:
    """What dedupe would do at r: exact dedupe by sha256, then one kept per component."""
    _, first = np.unique(sh, return_index=True)
    h, p = hashes[first], pid[first]
    found = neardup.brute_force(h, r)
    nodes, roots = neardup.components(*found.edges())
    root_of = dict(zip(nodes.tolist(), roots.tolist()))
    comp = np.array([root_of.get(v, v) for v in h.tolist()], dtype=np.uint64)
    # an image is 'wrongly removed' if it is removed and no kept image shows its picture
    order = np.lexsort((p, comp))
    kept_pics, removed = set(), []
    seen_comp = set()
    for k in order:
        if comp[k] in seen_comp:
            removed.append(k)
        else:
            seen_comp.add(comp[k])
            kept_pics.add(p[k])
    wrong = sum(1 for k in removed if p[k] not in kept_pics)
    # pictures that still have more than one copy after dedupe (missed)
    left = Counter(p[k] for k in set(range(len(h))) - set(removed))
    return {"removed": len(removed), "wrongly_removed": wrong, "pictures_left_duplicated": sum(1 for v in left.values() if v > 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--download", type=Path, required=True)
    ap.add_argument("--crawl", type=Path, required=True)
    ap.add_argument("--max-r", type=int, default=12)
    ap.add_argument("--keep-bars", action="store_true", help="hash the stored image whole (padding bars included)")
    args = ap.parse_args()
    hashes, pics, shas, evals = load(args.download, args.crawl, strip=not args.keep_bars)
    print(f"{len(hashes):,} downloaded images, {len(set(shas)):,} distinct by sha256, "
          f"{len(set(pics)):,} distinct pictures")
    print(f"{'r':>3} {'predicted':>10} {'true':>7} {'precision':>9} {'recall':>7} {'removed':>8} "
          f"{'wrong':>6} {'dup left':>8}")
    for row in table(hashes, pics, shas, range(0, args.max_r + 1)):
        print(f"{row['r']:>3} {row['pairs_predicted']:>10,} {row['true_positive']:>7,} {row['precision']:>9.3f} "
              f"{row['recall']:>7.3f} {row['removed']:>8,} {row['wrongly_removed']:>6,} "
              f"{row['pictures_left_duplicated']:>8,}")

    print("\ndecontamination: training images within r of an evaluation image")
    print(f"{'r':>3} {'flagged':>8} {'true':>6} {'precision':>9} {'recall':>7}")
    for row in eval_table(hashes, evals, args.crawl, range(0, args.max_r + 1, 2)):
        print(f"{row['r']:>3} {row['flagged']:>8,} {row['true_positive']:>6,} {row['precision']:>9.3f} {row['recall']:>7.3f}")


if __name__ == "__main__":
    main()

