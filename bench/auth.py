#!/usr/bin/env python3
"""Auth under load, run by bench/run-auth (which builds first).

One Kiln node on 127.0.0.1 with the plain hello component on two routes of
one app: `/public` (policy `public`) and `/user` (policy `user`), at the
default argon2 cost. Measures, in the same run:
  - the route check: wrk against `/public` without a token and `/user` with
    a valid access token, alternated over several rounds, at 1 and 32
    connections. Both requests have the same bytes: `/public` carries a
    header of the token header's length that is not `Authorization`, so the
    difference is the check, not the bytes on the wire; the check's cost per request is the difference in mean
    service time (1 / req/s at 1 connection, and the CPU time per request
    at 32: cores / req/s);
  - sign-ins per second at the default argon2 parameters (19 MiB, 2 passes,
    1 lane), from 1 client and from 8 concurrent clients of one app, and of
    4 apps at once (hashing runs one per app and one per core at a time).
Writes bench/results-auth.md.
"""
import json, os, platform, shutil, statistics, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (shares the server helpers)

ROUNDS = int(os.environ.get("KILN_BENCH_AUTH_ROUNDS", "5"))
SECONDS = int(os.environ.get("KILN_BENCH_AUTH_SECONDS", "10"))
SIGNIN_SECONDS = 10
PASSWORD = "correct horse battery staple"


def manifest():
    return ('[functions.hello]\ncomponent = "hello.wasm"\n'
            '[[routes]]\npath = "/public"\nfunction = "hello"\n'
            '[[routes]]\npath = "/user"\nfunction = "hello"\nauth = "user"\n')


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def deploy(kiln, app, digest):
    kiln.admin("POST", f"/apps/{app}/deployments",
               json.dumps({"manifest": manifest(), "components": {"hello": digest}}).encode())


def sign_ins(base_urls, clients, seconds):
    """Successful sign-ins per second by `clients` threads spread over the apps."""
    done, errors = [0], []
    stop_at = time.time() + seconds
    lock = threading.Lock()

    def work(i):
        base, email = base_urls[i % len(base_urls)]
        while time.time() < stop_at:
            try:
                post(f"{base}/_kiln/auth/signin", {"email": email, "password": PASSWORD})
                with lock:
                    done[0] += 1
            except Exception as err:  # noqa: BLE001
                errors.append(str(err))
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"bench: sign-in failed: {errors[0]}")
    return done[0] / (time.time() - t0)


def main():
    scratch = tempfile.mkdtemp(prefix="kiln-bench-auth-")
    kiln = bench.Kiln(os.path.join(scratch, "data"))
    try:
        kiln.wait_ready()
        digest = kiln.upload(bench.read(bench.HELLO))
        apps = [f"a{i}" for i in range(4)]
        for app in apps:
            deploy(kiln, app, digest)
        base = f"{kiln.base}/a0"
        bench.wait_ok(f"{base}/public")
        users = []
        for app in apps:
            b = f"{kiln.base}/{app}"
            email = f"bench@{app}.example"
            users.append((b, email, post(f"{b}/_kiln/auth/signup", {"email": email, "password": PASSWORD})))
        token = users[0][2]["access_token"]
        if bench.get_status(f"{base}/user") != 401:
            raise SystemExit("bench: /user answered without a token")

        # "X-Same-Length: " is 7 bytes shorter than "Authorization: Bearer ".
        padding = "X-Same-Length: " + "x" * (len(token) + 7)
        check = {}  # (route, connections) -> [(rps, p50, p99)]
        for r in range(ROUNDS):
            for c in (1, 32):
                for route, tok, pad in (("public", None, padding), ("user", token, None)):
                    rps, p50, p99, _ = bench.wrk(f"{base}/{route}", c, SECONDS, bearer=tok, header=pad)
                    check.setdefault((route, c), []).append((rps, p50, p99))
                    bench.log(f"round {r + 1} /{route} c={c}: {rps:.0f} req/s p50 {p50:.3f} ms p99 {p99:.3f} ms")

        signin = {}
        one = [(users[0][0], users[0][1])]
        signin["1 client, 1 app"] = sign_ins(one, 1, SIGNIN_SECONDS)
        signin["8 clients, 1 app"] = sign_ins(one, 8, SIGNIN_SECONDS)
        signin["8 clients, 4 apps"] = sign_ins([(u[0], u[1]) for u in users], 8, SIGNIN_SECONDS)
        for k, v in signin.items():
            bench.log(f"sign-ins {k}: {v:.1f}/s")
    finally:
        kiln.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    write(check, signin)


def median(values):
    return statistics.median(values)


def write(check, signin):
    cores = os.cpu_count()
    lines = ["# Auth benchmark", "",
             f"Run by `bench/run-auth` on {platform.node()} ({cores} cores, {platform.machine()}), "
             f"{time.strftime('%Y-%m-%d')}. One Kiln node on 127.0.0.1, the plain hello component, "
             f"wrk for {SECONDS} s per measurement, {ROUNDS} rounds alternating the two routes; medians. "
             "Both requests have the same bytes: `/public` carries a header as long as `/user`'s "
             "`Authorization` header, so the difference is the check.", "",
             "## The route check: `user` against `public`", "",
             "| connections | route | req/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- |"]
    for c in (1, 32):
        for route in ("public", "user"):
            rows = check[(route, c)]
            lines.append(f"| {c} | `{route}` | {median([r[0] for r in rows]):,.0f} | "
                         f"{median([r[1] for r in rows]):.3f} | {median([r[2] for r in rows]):.3f} |")
    pub1, usr1 = median([r[0] for r in check[("public", 1)]]), median([r[0] for r in check[("user", 1)]])
    pub32, usr32 = median([r[0] for r in check[("public", 32)]]), median([r[0] for r in check[("user", 32)]])
    cost1 = (1 / usr1 - 1 / pub1) * 1e6
    cost32 = (cores / usr32 - cores / pub32) * 1e6
    lines += ["",
              f"Cost of the check per request: **{cost1:.1f} µs** of service time at 1 connection "
              f"(1/req/s of `user` minus `public`), **{cost32:.1f} µs** of CPU at 32 connections "
              f"({cores} cores / req/s). `user` runs at {usr1 / pub1:.2f}x and {usr32 / pub32:.2f}x the "
              f"throughput of `public`. Target: at most 20 µs.", "",
              "Per request the check parses the bearer token, looks its SHA-256 up among the tokens whose "
              "Ed25519 signature already verified (the first request verifies it), and checks the session "
              "is still live: it reads the app's change counter (shared memory every node on the host "
              "maps) and, while the counter is unchanged, uses the session this node last read; any "
              "revocation bumps the counter, so the next request reads the session from the store again. "
              "On MongoDB there is no counter and every request reads the session (one indexed read).", "",
              "## Sign-ins per second (default argon2: 19 MiB, 2 passes, 1 lane)", "",
              "| clients | sign-ins/s |", "| --- | --- |"]
    for k, v in signin.items():
        lines.append(f"| {k} | {v:.1f} |")
    lines += ["", "Hashing runs on the blocking pool, one hash per app and one per core at a time, so one "
              "app's sign-ins are serialised and several apps share the cores.", ""]
    path = os.path.join(bench.ROOT, "bench/results-auth.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    bench.log(f"wrote {path}")


if __name__ == "__main__":
    main()
