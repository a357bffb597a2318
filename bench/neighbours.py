#!/usr/bin/env python3
"""A spinning neighbour, run by bench/run-neighbours (which builds first).

Two apps on one Kiln node on 127.0.0.1: `quiet` serves the plain Rust hello,
`spin` runs `misbehave`, whose `/spin` loops until its 2 s timeout. A client
asks `quiet` one request at a time while nothing else runs, then while 16
requests to `/spin` are kept in flight (each resent when it times out). The same is
measured on a node started with `--app-guest-cores 64`, where the spinning
app's guests do not take turns (Kiln before guest turns: the peer here).
Also `quiet` alone at 32 connections (wrk) on both nodes: what turns cost.
Systems alternate within each round. Target: in every round, quiet's p99
beside the spinning app is at most its p99 alone plus 5 ms.
Writes bench/results-neighbours.md.
"""
import http.client, json, os, platform, shutil, statistics, subprocess, sys, tempfile, threading, time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (shares the server helpers)

MISBEHAVE = os.path.join(bench.WASM, "misbehave.wasm")
ROUNDS = int(os.environ.get("KILN_BENCH_ROUNDS", "5"))
SECONDS = int(os.environ.get("KILN_BENCH_SECONDS", "5"))
SPINNERS = 16
TARGET_MS = 5.0


def start(scratch, guest_cores=None):
    if guest_cores is not None:
        os.environ["KILN_APP_GUEST_CORES"] = str(guest_cores)
    else:
        os.environ.pop("KILN_APP_GUEST_CORES", None)
    kiln = bench.Kiln(tempfile.mkdtemp(dir=scratch))
    kiln.wait_ready()
    kiln.deploy("quiet", {"hello": bench.read(bench.HELLO)}, {"/hello": "hello"})
    digest = kiln.upload(bench.read(MISBEHAVE))
    manifest = ('[functions.bad]\ncomponent = "bad.wasm"\nlimits = { timeout = "2s" }\n'
                '[[routes]]\npath = "/*rest"\nfunction = "bad"\n')
    kiln.admin("POST", "/apps/spin/deployments",
               json.dumps({"manifest": manifest, "components": {"bad": digest}}).encode())
    bench.wait_ok(f"{kiln.base}/quiet/hello")
    bench.wait_ok(f"{kiln.base}/spin/ok")
    return kiln


def spinning(kiln, stop):
    """Keeps SPINNERS requests to /spin in flight until `stop` is set."""
    def one():
        while not stop.is_set():
            try:
                urllib.request.urlopen(f"{kiln.base}/spin/spin", timeout=10).read()
            except Exception:
                pass  # 504 at the timeout: ask again
    threads = [threading.Thread(target=one, daemon=True) for _ in range(SPINNERS)]
    for t in threads:
        t.start()
    return threads


def probe(kiln):
    """req/s, p50, p99 and max ms of `quiet`'s hello asked one request at a
    time on one kept-alive connection. (wrk at 1 connection reports tails
    here that its own request count rules out, once the cores are busy.)"""
    conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
    waits = []
    started = time.perf_counter()
    while time.perf_counter() - started < SECONDS:
        t = time.perf_counter()
        conn.request("GET", "/quiet/hello")
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"bench: quiet answered {response.status}")
        waits.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - started
    conn.close()
    waits.sort()
    at = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))]  # noqa: E731
    return len(waits) / elapsed, at(0.5), at(0.99), waits[-1]


def measure(kiln, with_spinner, connections=1):
    if connections > 1:
        return bench.wrk(f"{kiln.base}/quiet/hello", connections, SECONDS)
    if not with_spinner:
        return probe(kiln)
    stop = threading.Event()
    threads = spinning(kiln, stop)
    time.sleep(0.5)
    try:
        return probe(kiln)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=15)


def main():
    scratch = tempfile.mkdtemp(prefix="kiln-bench-neighbours-")
    results = {"alone": [], "turns": [], "no turns": [], "alone c32": [], "alone c32 no turns": []}
    try:
        for round_ in range(ROUNDS):
            kiln = start(scratch)
            try:
                results["alone"].append(measure(kiln, False))
                results["alone c32"].append(measure(kiln, False, 32))
                results["turns"].append(measure(kiln, True))
            finally:
                kiln.stop()
            kiln = start(scratch, guest_cores=64)
            try:
                results["alone c32 no turns"].append(measure(kiln, False, 32))
                results["no turns"].append(measure(kiln, True))
            finally:
                kiln.stop()
            bench.log(f"round {round_ + 1}: " + ", ".join(
                f"{name} {r[-1][0]:.0f} req/s p99 {r[-1][2]:.2f} ms" for name, r in results.items()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write(results)


def write(results):
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=bench.ROOT).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    met = [t[2] <= a[2] + TARGET_MS for a, t in zip(results["alone"], results["turns"])]
    lines = [
        "# A spinning neighbour",
        "",
        f"Measured by `bench/run-neighbours` on {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, "
        f"Linux {platform.release()}; Kiln {commit} (release build), wrk and the server on the same cores.",
        "",
        f"App `quiet` (the plain Rust hello) asked one request at a time on one connection for {SECONDS} s "
        "(a Python client timing each; wrk at 1 connection reported tails its own request count rules out): alone, then while app "
        f"`spin` keeps {SPINNERS} guests looping to their 2 s timeout; and the same beside a node started with "
        "`--app-guest-cores 64` (no turns: how Kiln ran before). "
        f"{ROUNDS} rounds, systems alternating; medians, and every round's p99.",
        "",
        "| quiet app | req/s (median) | p50 ms (median) | p99 ms (median) | p99 ms, every round | max ms (median; wrk: -) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, label in [("alone", "alone"), ("turns", "beside the spinning app"),
                        ("no turns", "beside the spinning app, no turns"),
                        ("alone c32", "alone, 32 connections"),
                        ("alone c32 no turns", "alone, 32 connections, no turns")]:
        rs = results[name]
        med = lambda i: statistics.median(r[i] for r in rs)  # noqa: E731
        worst = f"{med(3):.1f}" if name in ("alone", "turns", "no turns") else "-"
        lines.append(f"| {label} | {med(0):,.0f} | {med(1):.2f} | {med(2):.2f} | "
                     + ", ".join(f"{r[2]:.2f}" for r in rs) + f" | {worst} |")
    ratio = [n[2] / t[2] for t, n in zip(results["turns"], results["no turns"])]
    cost = [t[0] / n[0] for t, n in zip(results["alone c32"], results["alone c32 no turns"])]
    lines += [
        "",
        f"Target: quiet's p99 beside the spinning app at most its p99 alone + {TARGET_MS:.0f} ms in every round: "
        f"**{'met' if all(met) else 'not met'}** ({sum(met)} of {len(met)} rounds). "
        f"p99 without turns over p99 with them, per round: {', '.join(f'{r:.0f}x' for r in ratio)}. "
        "What turns cost an app alone at 32 connections (req/s with turns over without), per round: "
        f"{', '.join(f'{r:.2f}x' for r in cost)}.",
        "",
    ]
    path = os.path.join(bench.ROOT, "bench/results-neighbours.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
