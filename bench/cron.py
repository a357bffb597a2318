#!/usr/bin/env python3
"""The scheduler under load, run by bench/run-cron (which builds first).

One Kiln node on 127.0.0.1 with 10,000 cron triggers across 100 apps, every
trigger firing once a minute (spread over the seconds of the minute, so about
167 runs a second), each running the cleanup example (one database delete).
Reports the scheduling delay (start minus scheduled time) p50/p99 from the
run history; then 4 apps each schedule 1,000 one-off jobs due at one instant
(the delay of each job, from its run record); then redeploys the triggers
yearly and measures the node's CPU and memory while idle between
occurrences. Writes bench/results-cron.md.
"""
import http.client, json, os, platform, statistics, sys, tempfile, time, shutil, subprocess

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (shares the server helpers)

CLEANUP = os.path.join(bench.WASM, "cleanup.wasm")
APPS, TRIGGERS_PER_APP = 100, 100
MEASURE_SECONDS = int(os.environ.get("KILN_BENCH_CRON_SECONDS", "120"))
IDLE_SECONDS = 30
JOB_APPS, JOBS_PER_APP = 4, 1000


def manifest(schedule_of):
    text = '[functions.cleanup]\ncomponent = "cleanup.wasm"\nlimits = { timeout = "10s" }\n'
    for i in range(TRIGGERS_PER_APP):
        text += (f'[[crons]]\nname = "t{i}"\nschedule = "{schedule_of(i)}"\nfunction = "cleanup"\n'
                 f'payload = {{ collection = "sessions" }}\n')
    return text


def deploy_all(kiln, schedule_of):
    body = bench.read(CLEANUP)
    digest = kiln.upload(body)
    for a in range(APPS):
        text = manifest(lambda i: schedule_of(a * TRIGGERS_PER_APP + i))
        kiln.admin("POST", f"/apps/app{a}/deployments",
                   json.dumps({"manifest": text, "components": {"cleanup": digest}}).encode())


def job_delays(kiln):
    """4 apps schedule 1,000 jobs each, all due at one instant; the delay of
    each job from its run record (started minus due)."""
    body = bench.read(CLEANUP)
    digest = kiln.upload(body)
    text = ('[functions.cleanup]\ncomponent = "cleanup.wasm"\nlimits = { timeout = "10s" }\n'
            '[[routes]]\npath = "/cleanup"\nfunction = "cleanup"\n')
    for a in range(JOB_APPS):
        kiln.admin("POST", f"/apps/jobs{a}/deployments",
                   json.dumps({"manifest": text, "components": {"cleanup": digest}}).encode())
    at_ms = int(time.time() * 1000) + 20_000
    for a in range(JOB_APPS):
        conn = http.client.HTTPConnection("127.0.0.1", kiln.port, timeout=30)
        for _ in range(JOBS_PER_APP):
            conn.request("POST", f"/jobs{a}/cleanup?at_ms={at_ms}")
            answer = conn.getresponse()
            answer.read()
            if answer.status != 202:
                raise SystemExit(f"bench: scheduling a job answered {answer.status}")
        conn.close()
    if time.time() * 1000 > at_ms:
        raise SystemExit("bench: scheduling 4,000 jobs took past their due time")
    time.sleep((at_ms - time.time() * 1000) / 1000 + 15)
    delays = []
    for a in range(JOB_APPS):
        for run in runs_of(kiln, f"jobs{a}"):
            if run["status"] == "succeeded":
                delays.append(run["started_ms"] - run["scheduled_ms"])
    delays.sort()
    return delays


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def runs_of(kiln, app):
    return json.loads(kiln.admin("GET", f"/apps/{app}/runs?limit=1000"))["runs"]


def main():
    scratch = tempfile.mkdtemp(prefix="kiln-bench-cron-")
    kiln = bench.Kiln(os.path.join(scratch, "data"))
    try:
        kiln.wait_ready()
        t0 = time.time()
        deploy_all(kiln, lambda n: f"{n % 60} * * * * *")
        bench.log(f"deployed {APPS * TRIGGERS_PER_APP} triggers in {time.time() - t0:.0f} s")
        start_ms = int(time.time() * 1000)
        time.sleep(MEASURE_SECONDS)
        end_ms = int(time.time() * 1000)
        delays, statuses = [], {}
        for a in range(APPS):
            for run in runs_of(kiln, f"app{a}"):
                statuses[run["status"]] = statuses.get(run["status"], 0) + 1
                if run["status"] == "succeeded" and start_ms <= run["scheduled_ms"] <= end_ms - 15_000:
                    delays.append(run["started_ms"] - run["scheduled_ms"])
        delays.sort()
        bench.log(f"runs by status: {statuses}; {len(delays)} delays")

        deploy_all(kiln, lambda n: "0 0 0 1 1 *")
        jobs = job_delays(kiln)
        bench.log(f"{len(jobs)} jobs ran")
        time.sleep(5)
        cpu0, w0 = cpu_seconds(kiln.proc.pid), time.time()
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(kiln.proc.pid) - cpu0) / (time.time() - w0) * 100
        idle_rss = bench.rss_bytes(kiln.proc.pid)
    finally:
        kiln.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    if not delays:
        raise SystemExit("bench: no run finished in the measured window")
    p = lambda q: delays[min(len(delays) - 1, int(len(delays) * q))]
    q = lambda values, at: values[min(len(values) - 1, int(len(values) * at))] if values else -1
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "unknown CPU")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=bench.ROOT, capture_output=True,
                            text=True).stdout.strip()
    text = f"""# Scheduler benchmark

Measured by `bench/run-cron` on {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, Linux {platform.release()};
Kiln {commit} (release build), embedded store (WAL, `synchronous = FULL`), one node.

{APPS * TRIGGERS_PER_APP:,} cron triggers across {APPS} apps, each firing once a minute at its own second
(about {APPS * TRIGGERS_PER_APP / 60:.0f} runs a second), each running `functions-examples/cleanup` (one
database delete). Measured for {MEASURE_SECONDS} s; delays are start minus scheduled time of every succeeded run
due in the window (the last 15 s left out, so slow runs are not dropped).

| measure | value |
| --- | --- |
| runs measured | {len(delays):,} |
| runs by status | {", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))} |
| scheduling delay p50 | {p(0.5):,} ms |
| scheduling delay p99 | {p(0.99):,} ms |
| scheduling delay max | {delays[-1]:,} ms |
| {JOB_APPS} apps × {JOBS_PER_APP:,} one-off jobs due at one instant: jobs run | {len(jobs):,} |
| their delay p50 | {q(jobs, 0.5):,} ms |
| their delay p99 | {q(jobs, 0.99):,} ms |
| idle between occurrences (all {APPS * TRIGGERS_PER_APP:,} triggers yearly): CPU | {idle_cpu:.1f} % of one core |
| idle between occurrences: RSS | {idle_rss / bench.MIB:.0f} MiB |
"""
    with open(os.path.join(bench.ROOT, "bench/results-cron.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
