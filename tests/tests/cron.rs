//! Cron triggers end to end: schedules with seconds keep every test within
//! seconds; manual runs (`POST .../crons/NAME/run`) drive the cases that
//! need one occurrence now.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kiln_tests::{ADMIN_KEY, Server, error_code, examples, json_of};
use reqwest::Method;
use serde_json::Value;

/// The misbehave function with one cron trigger; `extra` adds lines to the trigger.
fn manifest(schedule: &str, payload: &str, extra: &str) -> String {
    format!(
        r#"
[functions.probe]
component = "misbehave.wasm"
limits = {{ timeout = "1s" }}

[[routes]]
path = "/*rest"
function = "probe"

[[crons]]
name = "tick"
schedule = "{schedule}"
function = "probe"
payload = {payload}
{extra}
"#
    )
}

/// A trigger every second whose runs take `ms` (the timeout is 5 s).
fn sleeping_manifest(ms: u64, extra: &str) -> String {
    manifest(
        EVERY_SECOND,
        &format!("{{ do = \"sleep\", ms = {ms} }}"),
        extra,
    )
    .replace(r#"timeout = "1s""#, r#"timeout = "5s""#)
}

/// Every second.
const EVERY_SECOND: &str = "* * * * * *";
/// Far enough away that only manual runs happen in a test.
const YEARLY: &str = "0 0 1 1 *";

async fn deploy(server: &Server, manifest: &str) {
    server
        .deploy_ok("cron", manifest, &[("probe", &examples().misbehave)])
        .await;
}

async fn runs(server: &Server, query: &str) -> Vec<Value> {
    runs_of(server, "cron", query).await
}

async fn runs_of(server: &Server, app: &str, query: &str) -> Vec<Value> {
    let response = server
        .admin(Method::GET, &format!("/admin/v1/apps/{app}/runs?{query}"))
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().unwrap().clone()
}

/// Waits until `done` holds for the run history of app `cron` (at most `limit`).
async fn wait_for_runs(
    server: &Server,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    wait_for_runs_in(server, "cron", limit, done).await
}

async fn wait_for_runs_in(
    server: &Server,
    app: &str,
    limit: Duration,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let found = runs_of(server, app, "limit=1000").await;
        if done(&found) || started.elapsed() > limit {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With two nodes serving `app` (a trigger every second that records each
/// run under its own `_id`), every occurrence ran once.
async fn assert_each_occurrence_ran_once(first: &Server, second: Server, app: &str) {
    let history = wait_for_runs_in(first, app, Duration::from_secs(30), |runs| {
        with_status(runs, "succeeded").len() >= 5
    })
    .await;
    let succeeded = with_status(&history, "succeeded");
    assert!(succeeded.len() >= 5, "{history:?}");
    assert!(
        with_status(&history, "failed").is_empty(),
        "a run failed (twice-run occurrences fail on their _id): {history:?}"
    );
    let due: Vec<u64> = succeeded
        .iter()
        .map(|r| r["scheduled_ms"].as_u64().unwrap())
        .collect();
    let distinct: HashSet<_> = due.iter().collect();
    assert_eq!(
        distinct.len(),
        due.len(),
        "an occurrence ran twice: {due:?}"
    );
    drop(second);
    // The function's own records agree.
    let recorded_due: HashSet<u64> = recorded_in(first, app)
        .await
        .iter()
        .map(|d| d["scheduled_ms"].as_u64().unwrap())
        .collect();
    for run in &succeeded {
        let due = run["scheduled_ms"].as_u64().unwrap();
        assert!(
            recorded_due.contains(&due),
            "run {due} succeeded but recorded nothing"
        );
        assert_eq!(
            (run["trigger"].as_str(), run["attempt"].as_u64()),
            (Some("tick"), Some(1))
        );
        assert!(
            run["logs"]
                .as_str()
                .unwrap()
                .contains("misbehave: record for tick"),
            "{run}"
        );
        assert!(run["started_ms"].as_u64().unwrap() >= due);
    }
}

fn with_status<'a>(runs: &'a [Value], status: &str) -> Vec<&'a Value> {
    runs.iter().filter(|r| r["status"] == status).collect()
}

async fn run_now(server: &Server) -> u64 {
    let response = server
        .admin(Method::POST, "/admin/v1/apps/cron/crons/tick/run")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(status, 202, "{body}");
    body["scheduled_ms"].as_u64().unwrap()
}

/// What the function recorded itself: one document per run it completed.
async fn recorded_in(server: &Server, app: &str) -> Vec<Value> {
    let text = server
        .get(&format!("/{app}/cron-runs"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str::<Vec<Value>>(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_bad_schedule_timezone_or_handler_is_refused_at_deploy_naming_the_trigger() {
    let server = Server::start();
    for (manifest, needle) in [
        (manifest("61 * * * *", "{}", ""), "crons[0] (`tick`)"),
        (manifest("* * *", "{}", ""), "a schedule has 5"),
        (
            manifest(YEARLY, "{}", "timezone = \"Mars/Olympus\""),
            "Mars/Olympus",
        ),
        (manifest(YEARLY, "{}", "overlap = \"sometimes\""), "overlap"),
    ] {
        let (status, body) = server
            .deploy("cron", &manifest, &[("probe", &examples().misbehave)])
            .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_code(&body), "invalid_manifest", "{body}");
        assert!(body.to_string().contains(needle), "{needle}: {body}");
    }
    // A trigger calling a function without a scheduled handler.
    let hello_only = manifest(YEARLY, "{}", "").replace("misbehave.wasm", "hello.wasm");
    let (status, body) = server
        .deploy("cron", &hello_only, &[("probe", &examples().hello)])
        .await;
    assert_eq!(
        (status, error_code(&body)),
        (400, "missing_export"),
        "{body}"
    );
    assert!(
        body.to_string().contains("kiln:platform/scheduled-handler"),
        "{body}"
    );
    // Nothing was deployed.
    let apps = server
        .admin(Method::GET, "/admin/v1/apps")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(apps).await.1["apps"], serde_json::json!([]));
}

#[tokio::test]
async fn each_occurrence_runs_once_across_two_nodes_sharing_a_store() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    deploy(&first, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    // The second node reads the same deployments and the same store.
    let second = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    assert_each_occurrence_ran_once(&first, second, "cron").await;
}

/// `(started, ended)` of every finished run, sorted.
fn intervals(runs: &[Value]) -> Vec<(u64, u64)> {
    let mut spans: Vec<_> = runs
        .iter()
        .filter(|r| r["ended_ms"].is_u64() && r["started_ms"].is_u64())
        .map(|r| {
            (
                r["started_ms"].as_u64().unwrap(),
                r["ended_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    spans
}

fn assert_no_overlap(runs: &[Value]) {
    let spans = intervals(runs);
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two runs overlapped: {pair:?}");
    }
}

#[tokio::test]
async fn overlap_skip_records_the_skipped_occurrences() {
    let server = Server::start();
    // Each run takes 2.5 s (timeout 5 s); a new occurrence is due every second.
    let m = sleeping_manifest(2500, "");
    deploy(&server, &m).await;
    let history = wait_for_runs(&server, Duration::from_secs(20), |runs| {
        with_status(runs, "succeeded").len() >= 2 && with_status(runs, "skipped").len() >= 2
    })
    .await;
    assert!(with_status(&history, "skipped").len() >= 2, "{history:?}");
    let skipped = with_status(&history, "skipped")[0];
    assert!(
        skipped["error"].as_str().unwrap().contains("still running"),
        "{skipped}"
    );
    assert_no_overlap(&history);
}

#[tokio::test]
async fn overlap_queue_waits_for_the_previous_run() {
    let server = Server::start();
    let m = sleeping_manifest(1500, r#"overlap = "queue""#);
    deploy(&server, &m).await;
    let history = wait_for_runs(&server, Duration::from_secs(20), |runs| {
        with_status(runs, "succeeded").len() >= 3
    })
    .await;
    assert!(with_status(&history, "succeeded").len() >= 3, "{history:?}");
    assert!(with_status(&history, "skipped").is_empty(), "{history:?}");
    assert_no_overlap(&history);
}

#[tokio::test]
async fn a_trap_and_a_timeout_are_recorded_as_failed_runs() {
    let server = Server::start();
    deploy(&server, &manifest(YEARLY, r#"{ do = "trap" }"#, "")).await;
    let due = run_now(&server).await;
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        runs.iter().any(|r| r["status"] == "failed")
    })
    .await;
    let failed = with_status(&history, "failed");
    assert_eq!(failed.len(), 1, "{history:?}");
    assert_eq!(failed[0]["scheduled_ms"], due);
    assert_eq!(failed[0]["manual"], true);
    assert!(
        failed[0]["error"].as_str().unwrap().contains("trapped"),
        "{}",
        failed[0]
    );

    deploy(&server, &manifest(YEARLY, r#"{ do = "spin" }"#, "")).await;
    let started = Instant::now();
    run_now(&server).await;
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        runs.iter().any(|r| r["status"] == "timed_out")
    })
    .await;
    let timed_out = with_status(&history, "timed_out");
    assert_eq!(timed_out.len(), 1, "{history:?}");
    assert!(
        timed_out[0]["error"].as_str().unwrap().contains("1s"),
        "{}",
        timed_out[0]
    );
    assert!(started.elapsed() < Duration::from_secs(8));
    // The server still serves.
    assert_eq!(server.get("/cron/ok").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_failed_run_is_retried_with_backoff() {
    let server = Server::start();
    let m = manifest(
        YEARLY,
        r#"{ do = "fail", times = 2 }"#,
        "retries = 3\nretry_backoff = \"300ms\"",
    );
    deploy(&server, &m).await;
    let due = run_now(&server).await;
    let history = wait_for_runs(&server, Duration::from_secs(15), |runs| {
        runs.iter().any(|r| r["status"] == "succeeded")
    })
    .await;
    let mut attempts: Vec<&Value> = history
        .iter()
        .filter(|r| r["scheduled_ms"] == due)
        .collect();
    attempts.sort_by_key(|r| r["attempt"].as_u64());
    let statuses: Vec<_> = attempts
        .iter()
        .map(|r| {
            (
                r["attempt"].as_u64().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [(1, "failed"), (2, "failed"), (3, "succeeded")],
        "{history:?}"
    );
    // Backoff doubles: 300 ms after the first failure, 600 ms after the second.
    let gap =
        |a: &Value, b: &Value| b["started_ms"].as_u64().unwrap() - a["ended_ms"].as_u64().unwrap();
    assert!(gap(attempts[0], attempts[1]) >= 300, "{history:?}");
    assert!(gap(attempts[1], attempts[2]) >= 600, "{history:?}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("failing attempt 1")
    );
}

#[tokio::test]
async fn a_retry_never_runs_into_the_next_occurrence() {
    let server = Server::start();
    // Every second, always failing, backoff 5 s: no retry fits before the next.
    let m = manifest(
        EVERY_SECOND,
        r#"{ do = "fail" }"#,
        "retries = 3\nretry_backoff = \"5s\"",
    );
    deploy(&server, &m).await;
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        with_status(runs, "failed").len() >= 2
    })
    .await;
    assert!(with_status(&history, "failed").len() >= 2, "{history:?}");
    assert!(history.iter().all(|r| r["attempt"] == 1), "{history:?}");
}

#[tokio::test]
async fn missed_occurrences_are_recorded_and_the_latest_runs_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    deploy(
        &server,
        &manifest(
            EVERY_SECOND,
            r#"{ do = "record" }"#,
            r#"missed = "run-latest""#,
        ),
    )
    .await;
    wait_for_runs(&server, Duration::from_secs(10), |runs| {
        !with_status(runs, "succeeded").is_empty()
    })
    .await;
    server.kill();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;

    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        with_status(runs, "missed").len() >= 2
            && with_status(runs, "missed").iter().any(|m| {
                with_status(runs, "succeeded")
                    .iter()
                    .any(|s| s["scheduled_ms"] == m["scheduled_ms"])
            })
    })
    .await;
    let missed = with_status(&history, "missed");
    assert!(missed.len() >= 2, "{history:?}");
    assert!(
        missed.len() as u64 <= down.elapsed().as_secs() + 1,
        "{history:?}"
    );
    let latest_missed = missed
        .iter()
        .map(|m| m["scheduled_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let caught_up: Vec<_> = with_status(&history, "succeeded")
        .into_iter()
        .filter(|s| {
            missed
                .iter()
                .any(|m| m["scheduled_ms"] == s["scheduled_ms"])
        })
        .collect();
    assert_eq!(
        caught_up.len(),
        1,
        "only the latest missed occurrence runs: {history:?}"
    );
    assert_eq!(caught_up[0]["scheduled_ms"], latest_missed);
    assert!(
        missed[0]["error"]
            .as_str()
            .unwrap()
            .contains("no Kiln server was running")
    );
}

#[tokio::test]
async fn missed_skip_records_without_running() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    deploy(&server, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    wait_for_runs(&server, Duration::from_secs(10), |runs| {
        !with_status(runs, "succeeded").is_empty()
    })
    .await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        with_status(runs, "missed").len() >= 2
    })
    .await;
    let missed: HashSet<_> = with_status(&history, "missed")
        .iter()
        .map(|m| m["scheduled_ms"].as_u64())
        .collect();
    assert!(missed.len() >= 2, "{history:?}");
    let ran_missed = with_status(&history, "succeeded")
        .iter()
        .any(|s| missed.contains(&s["scheduled_ms"].as_u64()));
    assert!(!ran_missed, "a missed occurrence ran: {history:?}");
}

#[tokio::test]
async fn a_deploy_that_removes_a_trigger_stops_it_and_the_admin_api_lists_triggers() {
    let server = Server::start();
    deploy(&server, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    let listed = server
        .admin(Method::GET, "/admin/v1/apps/cron/crons")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(listed).await;
    assert_eq!(status, 200, "{body}");
    let tick = &body["crons"][0];
    assert_eq!(
        (tick["name"].as_str(), tick["timezone"].as_str()),
        (Some("tick"), Some("UTC"))
    );
    let next: Vec<_> = tick["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    assert_eq!(next.len(), 5);
    let mut sorted = next.clone();
    sorted.sort();
    assert_eq!(next, sorted);

    wait_for_runs(&server, Duration::from_secs(10), |runs| {
        !with_status(runs, "succeeded").is_empty()
    })
    .await;
    let without = manifest(EVERY_SECOND, "{}", "")
        .split("[[crons]]")
        .next()
        .unwrap()
        .to_string();
    deploy(&server, &without).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = runs(&server, "limit=1000").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        runs(&server, "limit=1000").await.len(),
        before,
        "the removed trigger still ran"
    );

    // Filters, and a trigger that does not exist.
    assert!(runs(&server, "status=failed").await.is_empty());
    assert!(runs(&server, "trigger=other").await.is_empty());
    let response = server
        .admin(Method::POST, "/admin/v1/apps/cron/crons/tick/run")
        .send()
        .await
        .unwrap();
    let (status, body) = json_of(response).await;
    assert_eq!(
        (status, error_code(&body)),
        (404, "trigger_not_found"),
        "{body}"
    );
    let response = server
        .admin(Method::GET, "/admin/v1/apps/cron/runs?color=red")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(response).await.0, 400);
}

/// The cleanup example, its cron trigger every second.
const CLEANUP_MANIFEST: &str = r#"
[functions.cleanup]
component = "cleanup.wasm"

[[routes]]
path = "/sessions"
function = "cleanup"

[[routes]]
path = "/cleanup"
function = "cleanup"

[[routes]]
path = "/jobs/:id"
function = "cleanup"

[[crons]]
name = "expire"
schedule = "* * * * * *"
function = "cleanup"
payload = { collection = "sessions" }
"#;

async fn session_count(server: &Server) -> u64 {
    let response = server.get("/shop/sessions").send().await.unwrap();
    json_of(response).await.1["count"].as_u64().unwrap()
}

async fn add_sessions(server: &Server, ttl_ms: u64, n: usize) {
    for _ in 0..n {
        let response = server
            .post(&format!("/shop/sessions?ttl_ms={ttl_ms}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
}

#[tokio::test]
async fn the_cleanup_example_deletes_expired_sessions_on_its_schedule() {
    let server = Server::start();
    server
        .deploy_ok(
            "shop",
            CLEANUP_MANIFEST,
            &[("cleanup", &examples().cleanup)],
        )
        .await;
    add_sessions(&server, 0, 3).await;
    add_sessions(&server, 600_000, 2).await;
    let started = Instant::now();
    while session_count(&server).await != 2 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        session_count(&server).await,
        2,
        "the expired sessions were not deleted"
    );
    let history = runs_of(&server, "shop", "trigger=expire&status=succeeded").await;
    assert!(
        history.iter().any(|r| r["logs"]
            .as_str()
            .unwrap()
            .contains("deleted 3 expired documents")),
        "{history:?}"
    );
}

#[tokio::test]
async fn a_one_off_job_survives_a_kill_and_runs_once_and_a_cancelled_one_never_runs() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    let no_cron = CLEANUP_MANIFEST.split("[[crons]]").next().unwrap();
    server
        .deploy_ok("shop", no_cron, &[("cleanup", &examples().cleanup)])
        .await;
    add_sessions(&server, 0, 3).await;
    let schedule = || async {
        let response = server
            .post("/shop/cleanup?delay_ms=3000")
            .send()
            .await
            .unwrap();
        let (status, body) = json_of(response).await;
        assert_eq!(status, 202, "{body}");
        body["job"].as_str().unwrap().to_string()
    };
    let kept = schedule().await;
    let cancelled = schedule().await;
    let cancel = || async {
        let path = format!("/shop/jobs/{cancelled}");
        server.delete(&path).send().await.unwrap().status().as_u16()
    };
    assert_eq!(cancel().await, 204);
    assert_eq!(
        cancel().await,
        404,
        "a cancelled job cannot be cancelled again"
    );
    server.kill();

    tokio::time::sleep(Duration::from_secs(4)).await;
    let server = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    let started = Instant::now();
    while !runs_of(&server, "shop", "status=succeeded")
        .await
        .iter()
        .any(|r| r["trigger"] == kept)
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Time for a second run of the same job, were there one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let history = runs_of(&server, "shop", "").await;
    let of = |id: &str| {
        history
            .iter()
            .filter(|r| r["trigger"] == id)
            .cloned()
            .collect::<Vec<_>>()
    };
    let ran = of(&kept);
    assert_eq!(ran.len(), 1, "{history:?}");
    assert_eq!(
        (ran[0]["status"].as_str(), ran[0]["job"].as_bool()),
        (Some("succeeded"), Some(true))
    );
    assert!(ran[0]["started_ms"].as_u64().unwrap() >= ran[0]["scheduled_ms"].as_u64().unwrap());
    assert!(
        of(&cancelled).is_empty(),
        "a cancelled job ran: {history:?}"
    );
    assert_eq!(session_count(&server).await, 0);
}

#[tokio::test]
async fn kiln_cron_list_and_kiln_runs_show_triggers_and_history() {
    let server = Server::start();
    server
        .deploy_ok(
            "shop",
            CLEANUP_MANIFEST,
            &[("cleanup", &examples().cleanup)],
        )
        .await;
    wait_for_runs_in(&server, "shop", Duration::from_secs(15), |runs| {
        with_status(runs, "succeeded").len() >= 2
    })
    .await;
    let kiln = |args: &[&str]| {
        let out = std::process::Command::new(kiln_tests::kiln_binary())
            .args(args)
            .args(["--server", &server.url, "--admin-key", ADMIN_KEY])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = kiln(&["cron", "list", "--app", "shop"]);
    assert!(
        listed.starts_with("expire `* * * * * *` (UTC) -> cleanup"),
        "{listed}"
    );
    assert_eq!(listed.matches("  next ").count(), 5, "{listed}");
    let runs = kiln(&[
        "runs",
        "--app",
        "shop",
        "--status",
        "succeeded",
        "--limit",
        "2",
    ]);
    assert_eq!(runs.lines().count(), 2, "{runs}");
    assert!(
        runs.lines()
            .all(|l| l.contains(" expire attempt 1 succeeded in ")),
        "{runs}"
    );
    // An unknown app: one line on stderr, a non-zero exit.
    let out = std::process::Command::new(kiln_tests::kiln_binary())
        .args([
            "cron",
            "list",
            "--app",
            "nope",
            "--server",
            &server.url,
            "--admin-key",
            ADMIN_KEY,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("404"), "{stderr}");
}

#[tokio::test]
async fn each_occurrence_runs_once_across_two_nodes_sharing_mongodb() {
    let Ok(uri) = std::env::var("KILN_TEST_MONGODB_URI") else {
        eprintln!("KILN_TEST_MONGODB_URI is not set: skipping the MongoDB run");
        return;
    };
    // Two nodes with their own data directories and one MongoDB; the app
    // name is unique because the MongoDB server outlives the run.
    let app = format!("cron{}", std::process::id());
    let first = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    first
        .deploy_ok(
            &app,
            &manifest(EVERY_SECOND, r#"{ do = "record" }"#, ""),
            &[("probe", &examples().misbehave)],
        )
        .await;
    let second = Server::start_with_env(&[("KILN_MONGODB_URI", &uri)]);
    // Components are on each node's disk until the S3 backend: give it one.
    second
        .upload(std::fs::read(&examples().misbehave).unwrap())
        .await;
    assert_each_occurrence_ran_once(&first, second, &app).await;
}

#[tokio::test]
async fn a_changed_schedule_takes_effect_at_its_next_occurrence_and_misses_nothing() {
    let server = Server::start();
    deploy(&server, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    wait_for_runs(&server, Duration::from_secs(10), |runs| {
        !with_status(runs, "succeeded").is_empty()
    })
    .await;
    deploy(&server, &manifest(YEARLY, r#"{ do = "record" }"#, "")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = runs(&server, "limit=1000").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        runs(&server, "limit=1000").await.len(),
        before,
        "the old schedule still ran"
    );
    // Back to every second: the seconds spent on the yearly schedule were not missed.
    let back = Instant::now();
    deploy(&server, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    let history = wait_for_runs(&server, Duration::from_secs(10), |runs| {
        with_status(runs, "succeeded").len() > before
    })
    .await;
    assert!(
        with_status(&history, "succeeded").len() > before,
        "{history:?}"
    );
    assert!(with_status(&history, "missed").is_empty(), "{history:?}");
    let newest = history
        .iter()
        .map(|r| r["scheduled_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let back_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - back.elapsed().as_millis() as u64;
    assert!(
        newest + 1000 >= back_ms,
        "runs resumed from the redeploy on"
    );
}

#[tokio::test]
async fn a_deploy_through_one_node_reaches_the_others_sharing_the_store() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    deploy(&first, &manifest(EVERY_SECOND, r#"{ do = "record" }"#, "")).await;
    let second = Server::start_in(data.path(), Some(ADMIN_KEY), false);
    wait_for_runs(&first, Duration::from_secs(10), |runs| {
        with_status(runs, "succeeded").len() >= 2
    })
    .await;
    // Version 2, deployed through the first node, has no trigger.
    let without = manifest(EVERY_SECOND, "{}", "")
        .split("[[crons]]")
        .next()
        .unwrap()
        .to_string();
    deploy(&first, &without).await;
    let started = Instant::now();
    let live_version = |server: &Server| {
        let request = server.admin(Method::GET, "/admin/v1/apps");
        async move { json_of(request.send().await.unwrap()).await.1["apps"][0]["version"].clone() }
    };
    while live_version(&second).await != 2 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        live_version(&second).await,
        2,
        "the second node did not switch"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = runs(&first, "limit=1000").await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        runs(&first, "limit=1000").await.len(),
        before,
        "a node still ran the removed trigger"
    );
    drop(second);
}

#[tokio::test]
async fn overlap_allow_runs_occurrences_alongside_each_other() {
    let server = Server::start();
    let m = sleeping_manifest(2500, r#"overlap = "allow""#);
    deploy(&server, &m).await;
    let history = wait_for_runs(&server, Duration::from_secs(20), |runs| {
        with_status(runs, "succeeded").len() >= 3
    })
    .await;
    assert!(with_status(&history, "skipped").is_empty(), "{history:?}");
    let spans = intervals(&history);
    assert!(
        spans.windows(2).any(|pair| pair[0].1 > pair[1].0),
        "no two runs overlapped: {spans:?}"
    );
}

#[tokio::test]
async fn a_javascript_function_runs_on_a_schedule_and_fails_by_throwing() {
    let server = Server::start();
    let m = r#"
[functions.tick]
component = "tick.wasm"

[[routes]]
path = "/ticks"
function = "tick"

[[crons]]
name = "every"
schedule = "* * * * * *"
function = "tick"

[[crons]]
name = "broken"
schedule = "0 0 1 1 *"
function = "tick"
payload = { fail = true }
"#;
    server
        .deploy_ok("js", m, &[("tick", &examples().tick_js)])
        .await;
    let response = server
        .admin(Method::POST, "/admin/v1/apps/js/crons/broken/run")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let history = wait_for_runs_in(&server, "js", Duration::from_secs(20), |runs| {
        with_status(runs, "succeeded").len() >= 2 && !with_status(runs, "failed").is_empty()
    })
    .await;
    let succeeded = with_status(&history, "succeeded");
    assert!(succeeded.len() >= 2, "{history:?}");
    assert!(
        succeeded[0]["logs"]
            .as_str()
            .unwrap()
            .contains("tick every due at"),
        "{history:?}"
    );
    let failed = with_status(&history, "failed");
    assert_eq!(failed.len(), 1, "{history:?}");
    // A thrown Error: its message, then where it was thrown in the source.
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("Error: failing on purpose (broken)\nscheduled@tick-js/index.js:"),
        "{error}"
    );
    let (status, body) = json_of(server.get("/js/ticks").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(body["ticks"].as_u64().unwrap() >= 2, "{body}");
}
