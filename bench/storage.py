#!/usr/bin/env python3
"""Files under load, run by bench/run-storage (which builds first).

One Kiln node on 127.0.0.1, local file backend, one app with a public bucket.
Measures, in the same run:
  - a 1 GiB upload and download through Kiln's file endpoints (curl,
    streamed): throughput, and the server's RSS before and at its peak while
    each runs (sampled every 20 ms from /proc);
  - small-file downloads per second (a 4 KiB file, wrk, 32 connections)
    from Kiln against the same file served by the native hyper server,
    which reads it from disk on every request.
Writes bench/results-storage.md.
"""
import json, os, platform, shutil, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

BIG_MIB = int(os.environ.get("KILN_BENCH_STORAGE_MIB", "1024"))
SECONDS = int(os.environ.get("KILN_BENCH_STORAGE_SECONDS", "10"))
ROUNDS = 3
PASSWORD = "correct horse battery staple"
MANIFEST = ('[functions.hello]\ncomponent = "hello.wasm"\n'
            '[buckets.bench]\nread = "public"\nupload = "user"\nreplace = "user"\nmax_size = "2 GiB"\n')


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


class PeakRss:
    """The highest RSS of `pid` while the block runs."""

    def __init__(self, pid):
        self.pid, self.peak, self.running = pid, 0, True

    def __enter__(self):
        self.before = bench.rss_bytes(self.pid)
        self.thread = threading.Thread(target=self.sample)
        self.thread.start()
        return self

    def sample(self):
        while self.running:
            self.peak = max(self.peak, bench.rss_bytes(self.pid))
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()


def curl(args):
    out = subprocess.run(["curl", "-sS", "--fail-with-body", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", *args],
                         capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise SystemExit(f"bench: curl {args[-1]} failed: {out.stdout} {out.stderr}")
    code, seconds = out.stdout.split()
    return int(code), float(seconds)


def main():
    scratch = tempfile.mkdtemp(prefix="kiln-bench-storage-")
    kiln = bench.Kiln(os.path.join(scratch, "data"))
    static_dir = os.path.join(scratch, "static")
    os.makedirs(static_dir)
    native_port = bench.free_port()
    native = subprocess.Popen([bench.NATIVE, str(native_port)], stdout=subprocess.DEVNULL,
                              env=dict(os.environ, NATIVE_STATIC_DIR=static_dir))
    try:
        kiln.wait_ready()
        digest = kiln.upload(bench.read(bench.HELLO))
        kiln.admin("POST", "/apps/media/deployments",
                   json.dumps({"manifest": MANIFEST, "components": {"hello": digest}}).encode())
        base = f"{kiln.base}/media"
        token = post(f"{base}/_kiln/auth/signup", {"email": "bench@media.example", "password": PASSWORD})["access_token"]
        auth = ["-H", f"Authorization: Bearer {token}"]

        big = os.path.join(scratch, "big.bin")
        with open(big, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(BIG_MIB):
                f.write(block)
        size = BIG_MIB << 20
        with PeakRss(kiln.proc.pid) as up:
            code, up_s = curl([*auth, "-H", "content-type: application/octet-stream", "-T", big, f"{base}/_kiln/files/bench/big.bin"])
        if code not in (200, 201):
            raise SystemExit(f"bench: upload answered {code}")
        bench.log(f"upload {BIG_MIB} MiB: {up_s:.2f} s, RSS {up.before >> 20} -> peak {up.peak >> 20} MiB")
        with PeakRss(kiln.proc.pid) as down:
            code, down_s = curl([f"{base}/_kiln/files/bench/big.bin"])
        bench.log(f"download {BIG_MIB} MiB: {down_s:.2f} s, RSS {down.before >> 20} -> peak {down.peak >> 20} MiB")
        os.remove(big)

        small = os.urandom(4096)
        with open(os.path.join(static_dir, "small.bin"), "wb") as f:
            f.write(small)
        req = urllib.request.Request(f"{base}/_kiln/files/bench/small.bin", data=small, method="PUT",
                                     headers={"Authorization": f"Bearer {token}", "content-type": "application/octet-stream"})
        urllib.request.urlopen(req, timeout=60).read()
        bench.wait_ok(f"http://127.0.0.1:{native_port}/static/small.bin", every=0.05)
        small_rounds = {"kiln": [], "native": []}
        for r in range(ROUNDS):
            for name, url in (("kiln", f"{base}/_kiln/files/bench/small.bin"),
                              ("native", f"http://127.0.0.1:{native_port}/static/small.bin")):
                rps, p50, p99, _ = bench.wrk(url, 32, SECONDS)
                small_rounds[name].append((rps, p50, p99))
                bench.log(f"round {r + 1} small file {name}: {rps:.0f} req/s p50 {p50:.3f} ms")
    finally:
        kiln.stop()
        bench.stop([native])
        shutil.rmtree(scratch, ignore_errors=True)
    write(size, (up_s, up), (down_s, down), small_rounds)


def write(size, up, down, small):
    import statistics
    mib = size / (1 << 20)
    lines = ["# Storage benchmark", "",
             f"Run by `bench/run-storage` on {platform.node()} ({os.cpu_count()} cores, {platform.machine()}), "
             f"{time.strftime('%Y-%m-%d')}. One Kiln node on 127.0.0.1, local file backend, curl and wrk on the "
             "same machine.", "",
             f"## {mib:.0f} MiB through the file endpoints", "",
             "| transfer | seconds | MiB/s | server RSS before | peak | growth | target |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, (seconds, rss) in (("upload (PUT, streamed)", up), ("download (GET)", down)):
        growth = (rss.peak - rss.before) / (1 << 20)
        lines.append(f"| {name} | {seconds:.2f} | {mib / seconds:.0f} | {rss.before >> 20} MiB | {rss.peak >> 20} MiB | "
                     f"{growth:+.1f} MiB | < +64 MiB: {'met' if growth < 64 else 'missed'} |")
    med = {k: statistics.median([r[0] for r in v]) for k, v in small.items()}
    p50 = {k: statistics.median([r[1] for r in v]) for k, v in small.items()}
    lines += ["", "## Small-file downloads (4 KiB, 32 connections, medians of 3 rounds)", "",
              "| server | req/s | p50 ms |", "| --- | --- | --- |",
              f"| Kiln `/_kiln/files/bench/small.bin` (public bucket) | {med['kiln']:,.0f} | {p50['kiln']:.3f} |",
              f"| native hyper, the file read from disk per request | {med['native']:,.0f} | {p50['native']:.3f} |",
              "", f"Kiln serves small files at {med['kiln'] / med['native']:.2f}x the native server's rate. Per "
              "download Kiln decides the rule (without a read), takes the file's record from its per-node "
              "cache (read again from the embedded store after any change to the app's files) and streams "
              "the blob from disk; the native server only reads the file.", ""]
    path = os.path.join(bench.ROOT, "bench/results-storage.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    bench.log(f"wrote {path}")


if __name__ == "__main__":
    main()
