#!/usr/bin/env python3
"""Kiln's benchmark suite, run by bench/run (which builds everything first).

Measures, on 127.0.0.1 only:
- HTTP: the same plain wasi:http components (Rust and JS) on Kiln and on
  `wasmtime serve`, and a native hyper server doing the same work, with wrk
  at 1, 32 and 1,000 connections; the JS hello written with @kiln/sdk on
  Kiln alone; systems alternate within each round, medians of the rounds.
- Database per request (Kiln only): one embedded-store read, one write.
- The database boundary: the same call natively and from a guest (bench-database).
- Cold paths: deploy to first response (uncached compile), a cached second
  deploy, the server's RSS before and after compiling a JS function, and
  server start to first response with 100 deployed apps.
- Density: RSS with 1,000 deployed idle functions, and at 1,000 connections.

Writes bench/results.md. Every wait is bounded; the whole run stays under 30 minutes.
"""
import hashlib, json, os, platform, re, resource, shutil, socket, statistics, subprocess, sys, tempfile, time
import urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target/wasm32-wasip2/release")
KILN = os.path.join(ROOT, "target/release/kiln")
NATIVE = os.path.join(ROOT, "target/release/native-hello")
BENCH_DATABASE = os.path.join(ROOT, "target/release/bench-database")
WASMTIME = os.environ.get("KILN_BENCH_WASMTIME", "wasmtime")
ROUNDS = int(os.environ.get("KILN_BENCH_ROUNDS", "3"))
DURATION = int(os.environ.get("KILN_BENCH_SECONDS", "10"))
SHORT = max(1, DURATION // 2)
COLD_RUNS = 3
APPS, FUNCTIONS_PER_APP = 100, 10

HELLO = os.path.join(WASM, "plain_http.wasm")
JSON_WORK = os.path.join(WASM, "json_work.wasm")
DB_LOOP = os.path.join(WASM, "db_loop.wasm")
HELLO_JS = os.path.join(ROOT, "target/kiln-bench/hello-js.wasm")
HELLO_SDK = os.path.join(ROOT, "target/kiln-bench/hello-sdk.wasm")
KEY = "bench"
MIB = 1024 * 1024


def log(message):
    print(message, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_status(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_ok(url, timeout=120, every=0.002):
    """Polls until `url` answers 200; returns when it did (time.perf_counter())."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if get_status(url) == 200:
            return time.perf_counter()
        time.sleep(every)
    raise SystemExit(f"bench: {url} did not answer 200 within {timeout} s")


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def digest_of(body):
    return "sha256:" + hashlib.sha256(body).hexdigest()


def variant(body, n):
    """The component with a custom section appended: the same code under a new
    digest, so Kiln compiles and caches it as a function of its own."""
    name = b"kiln-bench"
    payload = bytes([len(name)]) + name + n.to_bytes(4, "little")
    return body + b"\x00" + bytes([len(payload)]) + payload


class Kiln:
    """A `kiln serve` process on its own data directory."""

    def __init__(self, data, port=None):
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.started = time.perf_counter()
        # wrk's 1,000 connections all come from 127.0.0.1: lift the per-address cap.
        env = dict(os.environ, KILN_MAX_CONNECTIONS_PER_IP="100000")
        self.proc = subprocess.Popen([KILN, "serve", "--listen", f"127.0.0.1:{self.port}", "--data-dir", data,
                                      "--admin-key", KEY], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=env)

    def admin(self, method, path, body=None, content_type="application/json"):
        req = urllib.request.Request(f"{self.base}/admin/v1{path}", data=body, method=method,
                                     headers={"Authorization": f"Bearer {KEY}", "content-type": content_type})
        with urllib.request.urlopen(req, timeout=300) as r:
            return r.read()

    def wait_ready(self):
        deadline = time.time() + 60
        while get_status(f"{self.base}/admin/v1/apps") is None:
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit("bench: kiln did not start")
            time.sleep(0.01)

    def upload(self, body):
        digest = digest_of(body)
        self.admin("PUT", f"/components/{digest}", body, "application/wasm")
        return digest

    def deploy(self, app, functions, routes):
        """functions: name -> component bytes; routes: path -> function."""
        digests = {name: self.upload(body) for name, body in functions.items()}
        manifest = "".join(f'[functions.{n}]\ncomponent = "{n}.wasm"\n' for n in functions)
        manifest += "".join(f'[[routes]]\npath = "{p}"\nfunction = "{f}"\n' for p, f in routes.items())
        self.admin("POST", f"/apps/{app}/deployments",
                   json.dumps({"manifest": manifest, "components": digests}).encode())

    def stop(self):
        stop([self.proc])


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, connections, seconds, watch_pid=None, bearer=None, header=None):
    """req/s, p50 ms, p99 ms (and the highest RSS of watch_pid seen meanwhile).
    `header` is one more raw header line to send."""
    threads = min(2, connections)
    headers = ["-H", f"Authorization: Bearer {bearer}"] if bearer else []
    headers += ["-H", header] if header else []
    proc = subprocess.Popen(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
                             "--latency", *headers, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None and watch_pid:
        peak = max(peak, rss_bytes(watch_pid))
        time.sleep(0.1)
    out = proc.communicate(timeout=seconds + 60)[0]
    if "Requests/sec" not in out:
        raise SystemExit(f"bench: wrk against {url} reported no results:\n{out}")
    for pattern in [r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: .*"]:
        bad = re.search(pattern, out)
        if bad:
            raise SystemExit(f"bench: {url} at {connections} connections: {bad.group(0)}\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    return rps, p50, p99, peak


# ---------------------------------------------------------------- HTTP

def wait_for_artifacts(data, count, timeout=180):
    """Waits until Kiln's compile cache holds `count` optimized artifacts."""
    deadline = time.time() + timeout
    while True:
        found = sum(name.endswith(".kcwasm") for _, _, names in os.walk(os.path.join(data, "cache")) for name in names)
        if found >= count:
            return
        if time.time() > deadline:
            raise SystemExit(f"bench: {found} of {count} compiled artifacts after {timeout} s")
        time.sleep(0.1)


def start_kiln_http(scratch):
    data = tempfile.mkdtemp(dir=scratch)
    kiln = Kiln(data)
    kiln.wait_ready()
    kiln.deploy("b", {"hello": read(HELLO), "json": read(JSON_WORK), "db": read(DB_LOOP), "js": read(HELLO_JS),
                      "sdk": read(HELLO_SDK)},
                {"/hello": "hello", "/json": "json", "/db": "db", "/js": "js", "/sdk/:name": "sdk"})
    base = f"{kiln.base}/b"
    wait_ok(f"{base}/hello")
    wait_ok(f"{base}/js")
    # Measure the optimized code, not the quick code that serves a JS component first.
    wait_for_artifacts(data, 5)
    # The document the read workload gets.
    if get_status(f"{base}/db?op=insert&n=1&key=c1&id=o7") != 200:
        raise SystemExit("bench: seeding the database failed")
    urls = {"hello": f"{base}/hello", "json": f"{base}/json", "js hello": f"{base}/js",
            "js hello (sdk)": f"{base}/sdk/world",
            "db read": f"{base}/db?op=get&n=1&key=o7", "db write": f"{base}/db?op=insert&n=1&key=c1"}
    return [kiln.proc], urls


def start_wasmtime_http(_scratch):
    procs, urls = [], {}
    for name, file in [("hello", HELLO), ("json", JSON_WORK), ("js hello", HELLO_JS)]:
        port = free_port()
        procs.append(subprocess.Popen([WASMTIME, "serve", "-S", "cli=y", "--addr", f"127.0.0.1:{port}", file],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        urls[name] = f"http://127.0.0.1:{port}/{name.replace(' ', '-')}"
    for url in urls.values():
        # Compiling the JS component takes `wasmtime serve` seconds.
        wait_ok(url, every=0.05)
    return procs, urls


def start_native_http(_scratch):
    port = free_port()
    proc = subprocess.Popen([NATIVE, str(port)], stdout=subprocess.DEVNULL)
    urls = {"hello": f"http://127.0.0.1:{port}/hello", "json": f"http://127.0.0.1:{port}/json"}
    wait_ok(urls["hello"], every=0.05)
    return [proc], urls


SYSTEMS = {"kiln": start_kiln_http, "wasmtime serve": start_wasmtime_http, "native hyper": start_native_http}


def http_rounds(scratch):
    results = {}  # (workload, connections, system) -> list of (rps, p50, p99, rss)
    for round_ in range(ROUNDS):
        for system, start in SYSTEMS.items():
            procs, urls = start(scratch)
            try:
                plan = [("hello", 1, DURATION), ("hello", 32, DURATION), ("json", 1, DURATION), ("json", 32, DURATION),
                        ("hello", 1000, SHORT), ("js hello", 1, DURATION), ("js hello", 32, DURATION)]
                if system != "kiln":
                    plan = [p for p in plan if p[0] in urls]
                if system == "kiln":
                    plan += [("js hello (sdk)", 1, DURATION), ("js hello (sdk)", 32, DURATION),
                             ("db read", 1, SHORT), ("db read", 32, SHORT), ("db write", 1, SHORT), ("db write", 32, SHORT)]
                for workload, c, seconds in plan:
                    r = wrk(urls[workload], c, seconds, watch_pid=procs[0].pid if c == 1000 else None)
                    results.setdefault((workload, c, system), []).append(r)
                    log(f"round {round_ + 1} {system} {workload} c={c}: {r[0]:.0f} req/s p50 {r[1]:.2f} ms "
                        f"p99 {r[2]:.2f} ms" + (f" peak RSS {r[3] / MIB:.0f} MiB" if r[3] else ""))
            finally:
                stop(procs)
    return results


# ---------------------------------------------------------------- cold paths

def read(path):
    with open(path, "rb") as f:
        return f.read()


def kiln_deploy_to_first_response(scratch, body, second_deploy=False):
    """ms from the upload's start to the first 200 (compile uncached), and the
    server's RSS before the deploy and 1 s after that response; with
    second_deploy, also ms for deploying the same component again (cached)."""
    data = tempfile.mkdtemp(dir=scratch)
    kiln = Kiln(data)
    try:
        kiln.wait_ready()
        rss_before = rss_bytes(kiln.proc.pid)
        t0 = time.perf_counter()
        kiln.deploy("cold", {"f": body}, {"/f": "f"})
        first = (wait_ok(f"{kiln.base}/cold/f") - t0) * 1000
        time.sleep(1)
        rss_first = rss_bytes(kiln.proc.pid)
        again = rss_optimized = None
        if second_deploy:
            # Once the optimized code is compiled (and cached), a second deploy of the same component.
            wait_for_artifacts(data, 1)
            time.sleep(1)
            rss_optimized = rss_bytes(kiln.proc.pid)
            t0 = time.perf_counter()
            kiln.deploy("again", {"f": body}, {"/f": "f"})
            again = (wait_ok(f"{kiln.base}/again/f") - t0) * 1000
        return first, again, rss_before, (rss_first, rss_optimized)
    finally:
        kiln.stop()


def wasmtime_start_to_first_response(file):
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([WASMTIME, "serve", "-S", "cli=y", "-C", "cache=n", "--addr", f"127.0.0.1:{port}", file],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return (wait_ok(f"http://127.0.0.1:{port}/f") - t0) * 1000
    finally:
        stop([proc])


def cold_paths(scratch):
    results = {}
    hello, js = read(HELLO), read(HELLO_JS)
    for run in range(COLD_RUNS):
        first, _, _, _ = kiln_deploy_to_first_response(scratch, variant(hello, 10_000 + run))
        results.setdefault("rust kiln", []).append(first)
        results.setdefault("rust wasmtime", []).append(wasmtime_start_to_first_response(HELLO))
        first, again, rss_before, rss_after = kiln_deploy_to_first_response(
            scratch, variant(js, 20_000 + run), second_deploy=True)
        results.setdefault("js kiln", []).append(first)
        results.setdefault("js rss before", []).append(rss_before)
        results.setdefault("js rss first", []).append(rss_after[0])
        results.setdefault("js rss optimized", []).append(rss_after[1])
        results.setdefault("js kiln cached", []).append(again)
        results.setdefault("js wasmtime", []).append(wasmtime_start_to_first_response(HELLO_JS))
        log(f"cold run {run + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()))
    return {k: statistics.median(v) for k, v in results.items()}


def deploy_many(kiln, apps, functions_per_app):
    """Deploys `apps` apps of `functions_per_app` functions, each function its
    own component (a variant of the hello), so each is compiled and cached."""
    hello = read(HELLO)
    t0 = time.perf_counter()
    for a in range(apps):
        functions = {f"f{i}": variant(hello, a * functions_per_app + i) for i in range(functions_per_app)}
        kiln.deploy(f"app{a}", functions, {f"/f{i}": f"f{i}" for i in range(functions_per_app)})
    log(f"deployed {apps} apps of {functions_per_app} functions in {time.perf_counter() - t0:.0f} s")
    wait_ok(f"{kiln.base}/app{apps - 1}/f{functions_per_app - 1}")


def restarts(data, url_path):
    """Starts Kiln on `data` COLD_RUNS times: ms from spawning the process to
    the first 200 on url_path, and the RSS once idle after it."""
    starts, rss = [], []
    for _ in range(COLD_RUNS):
        kiln = Kiln(data)
        try:
            first = wait_ok(kiln.base + url_path, every=0.001)
            starts.append((first - kiln.started) * 1000)
            time.sleep(2)
            rss.append(rss_bytes(kiln.proc.pid))
        finally:
            kiln.stop()
    return statistics.median(starts), statistics.median(rss)


def start_with_apps(scratch):
    """Server start to first response with APPS deployed apps, every compiled
    artifact in the cache."""
    data = tempfile.mkdtemp(dir=scratch)
    kiln = Kiln(data)
    try:
        kiln.wait_ready()
        deploy_many(kiln, APPS, 1)
    finally:
        kiln.stop()
    start, _ = restarts(data, f"/app{APPS - 1}/f0")
    log(f"start with {APPS} apps: {start:.0f} ms")
    return start


def density(scratch):
    """RSS with APPS x FUNCTIONS_PER_APP deployed idle functions: in the
    process that compiled them, and after a restart."""
    data = tempfile.mkdtemp(dir=scratch)
    kiln = Kiln(data)
    try:
        kiln.wait_ready()
        deploy_many(kiln, APPS, FUNCTIONS_PER_APP)
        time.sleep(2)
        after_deploy = rss_bytes(kiln.proc.pid)
    finally:
        kiln.stop()
    start, idle = restarts(data, f"/app{APPS - 1}/f{FUNCTIONS_PER_APP - 1}")
    # Functions load on their first request: call each once, then measure.
    kiln = Kiln(data)
    try:
        kiln.wait_ready()
        for a in range(APPS):
            for i in range(FUNCTIONS_PER_APP):
                wait_ok(f"{kiln.base}/app{a}/f{i}", timeout=30)
        time.sleep(2)
        loaded = rss_bytes(kiln.proc.pid)
    finally:
        kiln.stop()
    log(f"{APPS * FUNCTIONS_PER_APP} functions: RSS {after_deploy / MIB:.0f} MiB after deploying, "
        f"{idle / MIB:.0f} MiB after a restart (which took {start:.0f} ms to the first response), "
        f"{loaded / MIB:.0f} MiB once each was called")
    return {"rss after deploy": after_deploy, "rss idle": idle, "rss loaded": loaded, "start": start}


def database_boundary():
    out = subprocess.run([BENCH_DATABASE, DB_LOOP], capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"bench: bench-database failed:\n{out.stderr}")
    log(out.stderr.strip())
    return json.loads(out.stdout)


# ---------------------------------------------------------------- report

def write(http, cold, start, dense, db):
    def med(key, i):
        return statistics.median(v[i] for v in http[key]) if key in http else None

    rows = []

    def row(measure, kiln, wasmtime=None, native=None, unit="", digits=0, target="", met=None):
        fmt = lambda v: "—" if v is None else f"{v:,.{digits}f}{unit}"
        ratio = lambda a, b: "—" if a is None or b is None else f"{a / b:.2f}x"
        verdict = "" if met is None else ("met" if met else "**missed**")
        rows.append(f"| {measure} | {fmt(kiln)} | {fmt(wasmtime)} | {fmt(native)} | {ratio(kiln, wasmtime)} | "
                    f"{ratio(kiln, native)} | {target} | {verdict} |")

    for workload in ["hello", "json", "js hello", "js hello (sdk)"]:
        for c in [1, 32, 1000]:
            if (workload, c, "kiln") not in http:
                continue
            k, w, n = ((workload, c, s) for s in SYSTEMS)
            rps = (med(k, 0), med(w, 0), med(n, 0))
            p99 = (med(k, 2), med(w, 2), med(n, 2))
            target, met = "", None
            if workload == "hello" and c == 32:
                target = "≥ 2x wasmtime serve with a lower p99; ≥ 0.2x native"
                met = rps[0] >= 2 * rps[1] and p99[0] < p99[1] and rps[0] >= 0.2 * rps[2]
            if workload == "json" and c == 32:
                target, met = "≥ 1.5x wasmtime serve", rps[0] >= 1.5 * rps[1]
            if workload == "js hello" and c == 32:
                target, met = "≥ 2x wasmtime serve", rps[0] >= 2 * rps[1]
            row(f"{workload}, {c} conn: req/s", *rps, target=target, met=met)
            row(f"{workload}, {c} conn: p50 latency", med(k, 1), med(w, 1), med(n, 1), " ms", 2)
            row(f"{workload}, {c} conn: p99 latency", *p99, " ms", 2)
            if c == 1000:
                row(f"{workload}, {c} conn: peak RSS", *(med(key, 3) / MIB for key in (k, w, n)), " MiB")
    for workload in ["db read", "db write"]:
        for c in [1, 32]:
            key = (workload, c, "kiln")
            row(f"{workload} per request, {c} conn: req/s", med(key, 0))
            row(f"{workload} per request, {c} conn: p99 latency", med(key, 2), unit=" ms", digits=2)
    get_target = 1.3 * db["native_get_us"] + 20
    row("one database get by `_id` (guest vs native call)", db["wasm_get_us"], native=db["native_get_us"], unit=" µs",
        digits=1, target=f"≤ 1.3x native + 20 µs (≤ {get_target:.1f} µs)", met=db["wasm_get_us"] <= get_target)
    find_target = 1.3 * db["native_find_us"] + 20
    row("one indexed find, 10 results (guest vs native call)", db["wasm_find_us"], native=db["native_find_us"],
        unit=" µs", digits=1, target=f"≤ 1.3x native + 20 µs (≤ {find_target:.1f} µs)",
        met=db["wasm_find_us"] <= find_target)
    row("Rust hello: deploy to first response, uncached (wasmtime: start to first response, no cache)",
        cold["rust kiln"], cold["rust wasmtime"], unit=" ms", target="< 150 ms", met=cold["rust kiln"] < 150)
    row("JS hello: deploy to first response, uncached (wasmtime: start to first response, no cache)",
        cold["js kiln"], cold["js wasmtime"], unit=" ms", target="< 2,000 ms", met=cold["js kiln"] < 2000)
    row("RSS of an empty server, before the JS deploy", cold["js rss before"] / MIB, unit=" MiB")
    row("RSS 1 s after the JS deploy's first response (quick code serving; Cranelift compiling in a child)",
        cold["js rss first"] / MIB, unit=" MiB")
    row("RSS 1 s after the optimized JS code replaced the quick code", cold["js rss optimized"] / MIB, unit=" MiB")
    row("JS hello: second deploy to first response (optimized code cached)", cold["js kiln cached"], unit=" ms",
        target="< 150 ms", met=cold["js kiln cached"] < 150)
    row(f"server start to first response, {APPS} deployed apps, compiled artifacts cached", start, unit=" ms",
        target="< 100 ms", met=start < 100)
    functions = APPS * FUNCTIONS_PER_APP
    row(f"server start to first response, {functions:,} deployed functions ({APPS} apps), cached", dense["start"],
        unit=" ms")
    row(f"RSS, {functions:,} deployed functions idle (after a restart)", dense["rss idle"] / MIB, unit=" MiB",
        target="< 300 MiB", met=dense["rss idle"] < 300 * MIB)
    row(f"RSS, {functions:,} deployed functions idle (the process that compiled them)",
        dense["rss after deploy"] / MIB, unit=" MiB")
    row(f"RSS, {functions:,} deployed functions, each called once, then idle", dense["rss loaded"] / MIB,
        unit=" MiB")

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    wasmtime_version = subprocess.run([WASMTIME, "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    text = f"""# Benchmarks

Measured by `bench/run` on {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, Linux {platform.release()}.
Versions: Kiln {commit or "(uncommitted)"} (release build), {wasmtime_version} (`wasmtime serve -S cli=y`: its
defaults, the pooling allocator and a fresh instance per request), a native hyper 1.x server with 2 worker threads
(`bench/native-hello`). The load generator (wrk, 2 threads) and the server share the machine, on 127.0.0.1.

HTTP rows are medians of {ROUNDS} rounds in which the systems alternate; {DURATION} s per run at 1 and 32
connections, {SHORT} s at 1,000 connections and for the database rows. Cold-path rows are medians of {COLD_RUNS} runs.
Workloads: `hello` is `functions-examples/plain-http` (a plain wasi:http component: the same file on Kiln and on
`wasmtime serve`; the native server answers the same text); `js hello` is `bench/hello-js` (a fetch handler built
by `sdk/js/build.mjs`, no Kiln imports: the same file on both); `js hello (sdk)` is `functions-examples/hello-js`
(`export default {{ fetch }}` with `env` and `ctx.params` through @kiln/sdk; Kiln only); `json` is `bench/json-work` (serialises a 50-element
JSON list per request); the database rows are `bench/db-loop` on the embedded store (one get by `_id`, or one
insert with `synchronous = FULL`, per request); the guest-vs-native rows time a loop of the same call inside a guest
and natively on a runtime worker ({db["documents"]:,} documents, an index on a field of {db["customers"]:,} values).
Ratios are Kiln divided by the other system: above 1 is better for req/s, below 1 is better for times and memory.

| measure | Kiln | wasmtime serve | native | Kiln / wasmtime serve | Kiln / native | target | |
| --- | --- | --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + f"""

The embedded store itself ({db["documents"]:,} documents, release build, WAL with `synchronous = FULL`):

| measure | value |
| --- | --- |
| insert throughput, batches of 1,000 | {db["insert_batched_docs_per_s"]:,.0f} docs/s |
| insert throughput, one document per call (one fsync per commit) | {db["insert_single_docs_per_s"]:,.0f} docs/s |
| indexed find by field (10 results), p50 | {db["find_p50_us"]:.1f} µs |
| indexed find by field (10 results), p99 | {db["find_p99_us"]:.1f} µs |
"""
    with open(os.path.join(ROOT, "bench/results.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    # wrk and the servers each hold a socket per connection.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 8192), hard), hard))
    scratch = tempfile.mkdtemp(prefix="kiln-bench-")
    started = time.time()
    try:
        db = database_boundary()
        cold = cold_paths(scratch)
        start = start_with_apps(scratch)
        dense = density(scratch)
        http = http_rounds(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log(f"bench: measured in {time.time() - started:.0f} s")
    write(http, cold, start, dense, db)


if __name__ == "__main__":
    main()
