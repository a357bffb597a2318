#!/usr/bin/env python3
"""The client data API against the same reads through a Rust function, run
by bench/run-data (which builds first).

One Kiln node on 127.0.0.1, one app with 10,000 items indexed by
{group, n}: a get by id, and a list of a group's first 20 items by n,
asked through the data API (`/_kiln/data/items`, a public collection) and
through the Rust function `bench/data-reads`, which makes the same store
calls. At 32 connections with wrk; at 1 connection with a kept-alive
Python client (wrk at 1 connection reports tails its own request count
rules out on busy cores). Paths alternate within each round.

Server time of a get at 1 connection: its median latency minus that of the
cheapest answer the server gives on the same path (a 404 from the
platform namespace), the two asked in turn on one connection, so the
client's and the loopback's share cancels.

Targets, in every round: the data API at least as fast as the function
(req/s at 32 connections, median at 1), and a get's server time under 100 us.
Writes bench/results-data.md.
"""
import http.client, json, os, platform, re, statistics, subprocess, sys, tempfile, time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

READS = os.path.join(bench.WASM, "data_reads.wasm")
ROUNDS = int(os.environ.get("KILN_BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("KILN_BENCH_SECONDS", "5"))
ITEMS = 10_000
TARGET_SERVER_US = 100.0

MANIFEST = """
[functions.reads]
component = "reads.wasm"

[[routes]]
path = "/setup"
methods = ["POST"]
function = "reads"

[[routes]]
path = "/get/:id"
function = "reads"

[[routes]]
path = "/list/:group"
function = "reads"

[collections.items]
list = "public"
get = "public"
"""


def start(scratch):
    kiln = bench.Kiln(tempfile.mkdtemp(dir=scratch))
    kiln.wait_ready()
    digest = kiln.upload(bench.read(READS))
    kiln.admin("POST", "/apps/data/deployments",
               json.dumps({"manifest": MANIFEST, "components": {"reads": digest}}).encode())
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=120)
    conn.request("POST", f"/data/setup?n={ITEMS}")
    answer = conn.getresponse()
    body = answer.read()
    if answer.status != 200:
        raise SystemExit(f"bench: setup answered {answer.status}: {body!r}")
    return kiln


def list_query(group):
    params = {"filter": json.dumps({"group": group}), "sort": json.dumps({"n": 1}), "limit": "20"}
    return "/data/_kiln/data/items?" + urllib.parse.urlencode(params)


PATHS = {
    "get, data API": "/data/_kiln/data/items/i4242",
    "get, function": "/data/get/i4242",
    "list 20, data API": list_query("g42"),
    "list 20, function": "/data/list/g42",
}
BASELINE = "/data/_kiln/nothing"


def one_at_a_time(kiln, path, expect):
    """Median and p99 ms of `path` asked one request at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
    waits = []
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        t = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        if response.status != expect:
            raise SystemExit(f"bench: {path} answered {response.status}: {body[:200]!r}")
        waits.append((time.perf_counter() - t) * 1000)
    conn.close()
    waits.sort()
    return statistics.median(waits), waits[int(0.99 * (len(waits) - 1))]


def interleaved(kiln, path, baseline):
    """Median ms of `path` (200) and of `baseline` (404), asked in turn."""
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
    waits = {path: [], baseline: []}
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        for asked, expect in ((path, 200), (baseline, 404)):
            t = time.perf_counter()
            conn.request("GET", asked)
            response = conn.getresponse()
            response.read()
            if response.status != expect:
                raise SystemExit(f"bench: {asked} answered {response.status}")
            waits[asked].append((time.perf_counter() - t) * 1000)
    conn.close()
    return statistics.median(waits[path]), statistics.median(waits[baseline])


def check_same(kiln):
    """Both paths answer the same documents."""
    def fetch(path):
        conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    assert fetch(PATHS["get, data API"]) == fetch(PATHS["get, function"])
    data, function = fetch(PATHS["list 20, data API"]), fetch(PATHS["list 20, function"])
    assert data["documents"] == function["documents"] and len(data["documents"]) == 20


def main():
    scratch = tempfile.mkdtemp(prefix="kiln-bench-data-")
    kiln = start(scratch)
    try:
        check_same(kiln)
        rounds = []
        for r in range(ROUNDS):
            row = {}
            _, base_p50 = interleaved(kiln, PATHS["get, data API"], BASELINE)
            get_p50, base_p50 = interleaved(kiln, PATHS["get, data API"], BASELINE)
            row["server_us"] = (get_p50 - base_p50) * 1000
            for name, path in PATHS.items():
                p50, p99 = one_at_a_time(kiln, path, 200)
                rps, _, wrk_p99, _ = bench.wrk(f"{kiln.base}{path}", 32, SECONDS)
                row[name] = {"c1_p50": p50, "c1_p99": p99, "c32_rps": rps, "c32_p99": wrk_p99}
            rounds.append(row)
            bench.log(f"round {r + 1}: server time {row['server_us']:.0f} us, " + ", ".join(
                f"{n} {v['c32_rps']:.0f} req/s" for n, v in row.items() if n in PATHS))
    finally:
        kiln.stop()
    write(rounds)


def write(rounds):
    lines = [
        "# Data API against a function's reads",
        "",
        f"`bench/run-data` on {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}: "
        f"{ROUNDS} rounds of {SECONDS} s per path; {ITEMS:,} items indexed by `{{group, n}}`; the data API's "
        "collection is `public`, so no token is verified on either path.",
        "",
        "| round | read | req/s at 32 (API / function) | ratio | p99 ms at 32 (API / function) | median ms at 1 (API / function) | get's server time at 1 | targets met |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    every = True
    for i, row in enumerate(rounds, 1):
        for read in ("get", "list 20"):
            api, fn = row[f"{read}, data API"], row[f"{read}, function"]
            ratio = api["c32_rps"] / fn["c32_rps"]
            server_us = row["server_us"]
            met = ratio >= 1.0 and api["c1_p50"] <= fn["c1_p50"]
            server = "-"
            if read == "get":
                server = f"{server_us:.0f} us"
                met = met and server_us < TARGET_SERVER_US
            every = every and met
            lines.append(
                f"| {i} | {read} | {api['c32_rps']:.0f} / {fn['c32_rps']:.0f} | {ratio:.2f}x | "
                f"{api['c32_p99']:.2f} / {fn['c32_p99']:.2f} | {api['c1_p50']:.3f} / {fn['c1_p50']:.3f} | {server} | "
                f"{'yes' if met else 'no'} |")
    lines += [
        "",
        f"Targets: the data API at least as fast as the function (req/s at 32 connections and median at 1), "
        f"and a get's server time under {TARGET_SERVER_US:.0f} us; met in every round: **{'yes' if every else 'no'}**.",
        "Server time = the get's median at 1 connection minus the median of a 404 from the platform namespace "
        "(the cheapest answer on the same path), the two asked in turn on one kept-alive connection "
        "(after a warm-up pass of the same).",
        "",
    ]
    path = os.path.join(bench.ROOT, "bench/results-data.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
