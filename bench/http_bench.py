#!/usr/bin/env python3
"""HTTP benchmark of Kiln against `wasmtime serve` and native hyper, on 127.0.0.1.

Run by bench/run-http (which builds everything first). For each round, each
workload and each connection count, the three systems are measured one after
the other with wrk (10 s each); the table reports medians of the rounds and
writes bench/results.md.
"""
import json, os, platform, re, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target/wasm32-wasip2/release")
KILN = os.path.join(ROOT, "target/release/kiln")
NATIVE = os.path.join(ROOT, "target/release/native-hello")
WASMTIME = os.environ["KILN_BENCH_WASMTIME"]
ROUNDS = int(os.environ.get("KILN_BENCH_ROUNDS", "3"))
DURATION = os.environ.get("KILN_BENCH_DURATION", "10s")
CONNECTIONS = [1, 32]
WORKLOADS = {"hello": "plain_http.wasm", "json": "json_work.wasm"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"bench: {url} did not answer within {timeout} s")


def start_kiln(data):
    proc = subprocess.Popen([KILN, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--admin-key", "bench"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    base = line.strip().removeprefix("kiln listening on ")
    digests = {}
    for name, file in WORKLOADS.items():
        body = open(os.path.join(WASM, file), "rb").read()
        import hashlib
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        req = urllib.request.Request(f"{base}/admin/v1/components/{digest}", data=body, method="PUT",
                                     headers={"Authorization": "Bearer bench"})
        urllib.request.urlopen(req).read()
        digests[name] = digest
    manifest = "".join(f'[functions.{n}]\ncomponent = "{n}.wasm"\n' for n in WORKLOADS)
    manifest += "".join(f'[[routes]]\npath = "/{n}"\nfunction = "{n}"\n' for n in WORKLOADS)
    req = urllib.request.Request(f"{base}/admin/v1/apps/b/deployments", method="POST",
                                 data=json.dumps({"manifest": manifest, "components": digests}).encode(),
                                 headers={"Authorization": "Bearer bench", "content-type": "application/json"})
    urllib.request.urlopen(req).read()
    urls = {n: f"{base}/b/{n}" for n in WORKLOADS}
    wait_for(urls["hello"])
    return [proc], urls


def start_wasmtime():
    procs, urls = [], {}
    for name, file in WORKLOADS.items():
        port = free_port()
        procs.append(subprocess.Popen([WASMTIME, "serve", "-S", "cli=y", "--addr", f"127.0.0.1:{port}",
                                       os.path.join(WASM, file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls[name] = f"http://127.0.0.1:{port}/{name}"
    for url in urls.values():
        wait_for(url)
    return procs, urls


def start_native():
    port = free_port()
    proc = subprocess.Popen([NATIVE, str(port)], stdout=subprocess.DEVNULL)
    urls = {"hello": f"http://127.0.0.1:{port}/hello", "json": f"http://127.0.0.1:{port}/json"}
    wait_for(urls["hello"])
    return [proc], urls


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections):
    out = subprocess.run(["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{DURATION}", "--latency", url],
                         capture_output=True, text=True, timeout=120).stdout
    if "Requests/sec" not in out:
        raise SystemExit(f"bench: wrk against {url} reported no results:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"bench: {url} answered {errors.group(1)} errors")
    return rps, p50, p99


def main():
    results = {}  # (workload, connections, system) -> list of (rps, p50, p99)
    systems = {"kiln": start_kiln, "wasmtime serve": start_wasmtime, "native hyper": start_native}
    data = tempfile.mkdtemp(prefix="kiln-bench-")
    try:
        for round_ in range(ROUNDS):
            for system, start in systems.items():
                procs, urls = start(data) if system == "kiln" else start()
                try:
                    for workload in WORKLOADS:
                        for c in CONNECTIONS:
                            r = wrk(urls[workload], c)
                            results.setdefault((workload, c, system), []).append(r)
                            print(f"round {round_ + 1} {system} {workload} c={c}: {r[0]:.0f} req/s p50 {r[1]:.2f} ms p99 {r[2]:.2f} ms", file=sys.stderr)
                finally:
                    for p in procs:
                        p.terminate()
                        p.wait()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    write(results)


def median(values, i):
    return statistics.median(v[i] for v in values)


def write(results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    wasmtime_version = subprocess.run([WASMTIME, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    for workload in WORKLOADS:
        for c in CONNECTIONS:
            kiln = results[(workload, c, "kiln")]
            for system in ["kiln", "wasmtime serve", "native hyper"]:
                values = results[(workload, c, system)]
                rps = median(values, 0)
                vs_wasmtime = median(kiln, 0) / median(results[(workload, c, "wasmtime serve")], 0)
                vs_native = median(kiln, 0) / median(results[(workload, c, "native hyper")], 0)
                ratios = f"{vs_wasmtime:.2f}x | {vs_native:.2f}x" if system == "kiln" else " | "
                rows.append(f"| {workload} | {c} | {system} | {rps:,.0f} | {median(values, 1):.2f} | {median(values, 2):.2f} | {ratios} |")
    text = f"""# HTTP benchmark

Measured by `bench/run-http` on {cpu} ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}; wrk with 2 threads (1 at one connection), {DURATION} per run,
median of {ROUNDS} rounds, systems alternating within each round; wrk and the server share the machine.
Versions: Kiln (this commit, release build), {wasmtime_version} (`wasmtime serve -S cli=y`, its defaults: pooling
allocator, fresh instance per request), native hyper 1.12 with 2 workers. Linux {platform.release()}.

Workloads: `hello` is `functions-examples/plain-http` (a plain wasi:http component, the same file on Kiln and on
`wasmtime serve`); `json` is `bench/json-work` (serialises a 50-element JSON list per request).

| workload | connections | system | req/s | p50 ms | p99 ms | Kiln / wasmtime serve | Kiln / native |
| --- | --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + """

Targets of the performance issue: hello at 32 connections at least 2x `wasmtime serve` with a lower p99 and at
least 0.2x native; json at least 1.5x `wasmtime serve`. Not measured here yet: database calls per request, cold
paths (deploy to first response, start with 100 cached apps) and density (RSS with 1,000 functions); the database
boundary cost is in `bench/results-database.md`.
"""
    open(os.path.join(ROOT, "bench/results.md"), "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
