"""Route filter cost: the receiver's decisions per request with and without filters in the routes.

    .venv/bin/python bench/filters.py [--requests 20000] [--rounds 7] [--baseline REV]
                                      [--instructions N]

Measures `relay.receiver.accept.accept` (everything the receiver decides for one request, from
the head to the routed events, without I/O) on one JSON event, for three tables:

    plain      routes.toml without filters (the route takes the event type)
    filtered   the same route with a two-field filter the event passes
    missed     the same filter, failed by the event's first field

Timing: each round runs every table once, each in a fresh process, in turn, so a busy neighbour
slows them alike; the figure is the median over rounds of each ratio to `plain`. With
`--baseline REV` (e.g. the commit before filters existed) the `plain` table is also run on that
revision's code (`git archive` into a temporary directory), alternating with this tree's.

`--instructions N` counts instead (valgrind's callgrind, the count of the process's own
instructions, the same on every run): each case runs with 0 and with N requests, and the
difference divided by N is the instructions per request, free of start-up and imports.

Not a timed test: absolute figures depend on the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEAD = """
[sources.lms]
kind = "json"
event = "type"

[targets.archive]
url = "https://archive.example/hook"

[targets.crm]
url = "https://crm.example/hook"
"""
PLAIN = HEAD + '[[routes]]\nsource = "lms"\nevents = ["course.*"]\ntargets = ["archive", "crm"]\n'
FILTER = '\nfilter = { "body:course.id" = ["42", "7*"], "header:x-tenant" = ["acme", "beta*"] }\n'
BODY = json.dumps(
    {"type": "course.completed", "course": {"id": "71", "name": "Intro"}, "member": {"id": 5}}
).encode()
CASES = {
    "plain": (PLAIN, BODY),
    "filtered": (PLAIN + FILTER, BODY),
    "missed": (PLAIN + FILTER, BODY.replace(b'"71"', b'"9"')),
}
#: `filters.py --child CASE N`: time N requests of one case, print seconds per request.
_CHILD = "--child"


def per_request(case: str, requests: int) -> float:
    """Seconds per `accept()` of the case's request, routed by its table (in this process)."""
    from relay.config.loading import parse_routes
    from relay.receiver.accept import Request, accept

    text, body = CASES[case]
    table = parse_routes(text, "routes.toml", {})
    headers = {"content-type": "application/json", "x-tenant": "acme"}
    request = Request("POST", "lms", None, headers)
    for _ in range(200):  # warm: first-use caches, the routing memo
        accept(table, request, body, event_id="evt_bench", received_at=0.0)
    start = time.perf_counter()
    for _ in range(requests):
        accept(table, request, body, event_id="evt_bench", received_at=0.0)
    return (time.perf_counter() - start) / max(requests, 1)


def child(tree: Path, case: str, requests: int, prefix: tuple[str, ...] = ()) -> str:
    """Run one case in a fresh process on the code in `tree`; its stdout and stderr."""
    answer = subprocess.run(
        [*prefix, sys.executable, __file__, _CHILD, case, str(requests)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )
    return answer.stdout + answer.stderr


def instructions(tree: Path, case: str, requests: int) -> float:
    """Instructions per request of one case on the code in `tree` (callgrind, 0 and N runs)."""
    counts = []
    for n in (0, requests):
        with tempfile.TemporaryDirectory() as tmp:
            out = f"--callgrind-out-file={tmp}/callgrind.out"
            text = child(tree, case, n, ("valgrind", "--tool=callgrind", out))
        found = re.search(r"Collected : (\d+)", text)
        if found is None:
            raise RuntimeError(f"no callgrind count in:\n{text}")
        counts.append(int(found.group(1)))
    return (counts[1] - counts[0]) / requests


def extract(revision: str, directory: Path) -> None:
    """`git archive REV relay worker` unpacked into `directory`."""
    archive = subprocess.run(
        ["git", "archive", revision, "relay", "worker"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)


def show_ratios(name: str, values: list[float], bases: list[float], under: str) -> None:
    ratios = [value / base for value, base in zip(values, bases, strict=True)]
    spread = f"{min(ratios):.3f}-{max(ratios):.3f}"
    print(f"  {name} / {under}: {statistics.median(ratios):.3f}  (rounds {spread})")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == _CHILD:
        print(per_request(sys.argv[2], int(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline", help="a git revision to run the plain table on as well")
    parser.add_argument("--instructions", type=int, metavar="N", help="count with callgrind")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the code to measure (a checkout)")
    args = parser.parse_args()
    runs = [(name, args.tree, name) for name in CASES]
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            extract(args.baseline, Path(tmp))
            runs.append(("baseline", Path(tmp), "plain"))
        if args.instructions:
            if shutil.which("valgrind") is None:
                sys.exit("--instructions needs valgrind (Debian's package)")
            print(f"accept() instructions per request (callgrind, {args.instructions} requests):")
            n = args.instructions
            counts = {name: instructions(tree, case, n) for name, tree, case in runs}
            for name, count in counts.items():
                print(f"  {name:9} {count:9,.0f}  ({count / counts['plain']:.3f} of plain)")
            return 0
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        for _ in range(args.rounds):
            for name, tree, case in runs:
                times[name].append(float(child(tree, case, args.requests)))
    print(f"accept() per request, median of {args.rounds} rounds of {args.requests}:")
    for name, found in times.items():
        spread = f"{min(found) * 1e6:.2f}-{max(found) * 1e6:.2f}"
        print(f"  {name:9} {statistics.median(found) * 1e6:6.2f} us  (rounds {spread} us)")
    show_ratios("filtered", times["filtered"], times["plain"], "plain")
    show_ratios("missed", times["missed"], times["plain"], "plain")
    if args.baseline:
        show_ratios("plain", times["plain"], times["baseline"], f"plain on {args.baseline}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
