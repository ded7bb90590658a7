"""openwit's robots.txt reading on real files, against the standard library's parser.

The corpus: 4,231 robots.txt files fetched from popular websites, shipped in protego's
source distribution (``tests/test_data``; one file per host)::

    pip download --no-deps --no-binary :all: protego==0.7.0 && tar xzf protego-0.7.0.tar.gz
    python -m benchmarks.robots_real --corpus protego-0.7.0/tests/test_data

Each file goes through the download stage's own code (``pipeline.robots.decode``: the first
500 KiB, UTF-8, byte-order mark dropped; ``pipeline.robots.rules``: RFC 9309 matching). The
probes are the file's own rules: for each Allow/Disallow path, the path itself (``*`` made
``x``, a final ``$`` dropped) and the path with a suffix. Each probe is judged for the
token ``openwit`` by openwit and by ``urllib.robotparser`` fed the text as it was fed
before (BOM kept): the disagreements are the fetches the old reading got wrong.
"""

from __future__ import annotations

import argparse
import collections
import re
import time
import urllib.robotparser
from pathlib import Path

from pipeline import robots
from pipeline.netguard import USER_AGENT_TOKEN

RULE = re.compile(r"^\s*(allow|disallow)\s*:\s*(\S+)", re.IGNORECASE)


def probes(text: str) -> list[tuple[str, bool]]:
    """(path, from a wildcard rule) for every Allow/Disallow path in the file."""
    out = []
    for line in text.splitlines():
        m = RULE.match(line.split("#", 1)[0])
        if not m:
            continue
        rule = m.group(2)
        wild = "*" in rule or rule.endswith("$")
        path = rule.removesuffix("$").replace("*", "x")
        path = path if path.startswith("/") else "/" + path
        out += [(path, wild), (path.rstrip("/") + "/zz-probe.jpg", wild)]
    return out


def _stdlib(lines: list[str]) -> urllib.robotparser.RobotFileParser:
    parser = urllib.robotparser.RobotFileParser()
    parser.parse(lines)
    return parser


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", required=True, help="a folder of robots.txt files (protego's tests/test_data)")
    args = ap.parse_args()
    files = sorted(p for p in Path(args.corpus).iterdir() if p.is_file())
    if not files:
        raise SystemExit(f"{args.corpus}: no files")
    seen = collections.Counter()
    causes = collections.Counter()
    examples: dict[str, tuple[str, str]] = {}
    parse_seconds = 0.0
    for f in files:
        raw = f.read_bytes()
        seen["files"] += 1
        seen["bytes"] += len(raw)
        seen["bom"] += raw.startswith(b"\xef\xbb\xbf")
        seen["over_500KiB"] += len(raw) > robots.ROBOTS_LIMIT
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            seen["not_utf8"] += 1
        start = time.perf_counter()
        try:
            ours = robots.rules(robots.decode(raw))
        except Exception as e:  # noqa: BLE001 - counted and shown: the stage would cache it as unreachable
            seen["parse_errors"] += 1
            examples.setdefault(f"error {type(e).__name__}", (f.name, str(e)[:80]))
            continue
        parse_seconds += time.perf_counter() - start
        # The stdlib as the old code fed it, then with its known differences removed one by
        # one: what makes it agree names the cause of a disagreement.
        as_fed = raw.decode("utf-8", "replace").splitlines()
        no_bom = [line.lstrip("\ufeff") for line in as_fed]
        no_blank = [line for line in no_bom if line.split("#", 1)[0].strip()]
        stdlib, stdlib_no_bom, stdlib_no_blank = (_stdlib(lines) for lines in (as_fed, no_bom, no_blank))
        wrong_here = set()
        for path, wild in probes(robots.decode(raw)):
            url = f"http://{f.name}{path}"
            a, b = ours.can_fetch(url, USER_AGENT_TOKEN), stdlib.can_fetch(USER_AGENT_TOKEN, url)
            seen["probes"] += 1
            if a == b:
                continue
            direction = "stdlib fetched a disallowed path" if b else "stdlib refused an allowed path"
            if stdlib_no_bom.can_fetch(USER_AGENT_TOKEN, url) == a:
                cause = "byte-order mark hides the first line"
            elif stdlib_no_blank.can_fetch(USER_AGENT_TOKEN, url) == a:
                cause = "a blank line ends the group (RFC 9309: it does not)"
            elif wild:
                cause = "wildcard rule (* or $) read literally"
            else:
                cause = "first matching rule, not the longest"
            causes[direction, cause] += 1
            seen[direction] += 1
            wrong_here.add(direction)
            examples.setdefault(f"{direction} / {cause}", (f.name, path))
        for direction in wrong_here:
            seen[f"files: {direction}"] += 1
    print(f"{seen['files']:,} real robots.txt files, {seen['bytes'] / 1e6:.1f} MB: {seen['bom']} start with a "
          f"byte-order mark, {seen['not_utf8']} are not valid UTF-8, {seen['over_500KiB']} exceed 500 KiB")
    print(f"parse errors: {seen['parse_errors']}; parsing (decode + rules) {parse_seconds * 1000 / seen['files']:.2f} ms "
          f"a file on average")
    print(f"{seen['probes']:,} probes (each Allow/Disallow path of each file, and the path with a suffix), "
          f"token {USER_AGENT_TOKEN!r}")
    for direction in ("stdlib fetched a disallowed path", "stdlib refused an allowed path"):
        print(f"  {direction}: {seen[direction]:,} probes ({seen[direction] / max(seen['probes'], 1):.2%}) "
              f"in {seen['files: ' + direction]:,} files")
        for (d, cause), n in sorted(causes.items(), key=lambda kv: -kv[1]):
            if d == direction:
                print(f"    {cause}: {n:,}  e.g. {examples[f'{d} / {cause}'][0]} {examples[f'{d} / {cause}'][1]}")
    for key, (name, what) in examples.items():
        if key.startswith("error"):
            print(f"  {key}: {name}: {what}")


if __name__ == "__main__":
    main()
