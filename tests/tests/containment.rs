//! Hostile tenants and clients: each test runs an attack against a real
//! server and shows that another app keeps answering (and, for the memory
//! attacks, that the server's memory stays bounded). The waits are generous
//! bounds, not benchmarks: they prove nobody is blocked.

use std::time::{Duration, Instant};

use kiln_tests::{Server, error_code, examples, json_of};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MISBEHAVE: &str = r#"
[functions.bad]
component = "misbehave.wasm"
limits = { timeout = "20s" }

[[routes]]
path = "/*rest"
function = "bad"
"#;

/// A server with the attacker app `bad` and the victim app `victim`, both
/// running `misbehave` (the victim only ever asks for `/ok` and `/incr`).
async fn two_apps(env: &[(&str, &str)], attacker_manifest: &str) -> Server {
    let server = Server::start_with_env(env);
    let component = &examples().misbehave;
    server
        .deploy_ok("bad", attacker_manifest, &[("bad", component)])
        .await;
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", component)])
        .await;
    server
}

/// The victim answers, each time within `bound`, a few times over.
async fn victim_answers(server: &Server, path: &str, bound: Duration) {
    for _ in 0..5 {
        let started = Instant::now();
        let response = server
            .get(&format!("/victim{path}"))
            .timeout(bound * 4)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let elapsed = started.elapsed();
        assert_eq!(status, 200, "{}", response.text().await.unwrap());
        assert!(elapsed < bound, "the victim waited {elapsed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One raw database call of the attacker app.
async fn raw(server: &Server, call: Value) -> Value {
    let (status, body) =
        json_of(server.post("/bad/db-raw").json(&call).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn quadratic_update_parsing_does_not_stall_other_apps() {
    let server = two_apps(&[], MISBEHAVE).await;
    // 30,000 paths: a pairwise conflict check did 450 million comparisons.
    let fields: serde_json::Map<String, Value> =
        (0..30_000).map(|i| (format!("f{i}.g"), json!(i))).collect();
    let call = json!({"op": "update", "filter": {}, "update": {"$set": fields}});
    let attacks: Vec<_> = (0..2)
        .map(|_| {
            let request = server.post("/bad/db-raw").json(&call).send();
            tokio::spawn(async move {
                let started = Instant::now();
                let body = json_of(request.await.unwrap()).await.1;
                (body, started.elapsed())
            })
        })
        .collect();
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    for attack in attacks {
        let (body, took) = attack.await.unwrap();
        assert_eq!(body["ok"]["matched"], 0, "{body}");
        assert!(took < Duration::from_secs(10), "an update took {took:?}");
    }
}

#[tokio::test]
async fn a_path_through_nested_arrays_is_resolved_in_bounded_time() {
    let server = two_apps(&[], MISBEHAVE).await;
    let mut nested = json!(1);
    for _ in 0..40 {
        nested = json!([{ "0": nested }]);
    }
    let inserted = raw(&server, json!({"op": "insert", "doc": {"a": nested}})).await;
    assert!(inserted["ok"].is_string(), "{inserted}");
    let path = format!("a{}", ".0".repeat(100));
    let started = Instant::now();
    let attack = tokio::spawn({
        let request = server
            .post("/bad/db-raw")
            .json(&json!({"op": "find", "filter": {path: 1}}))
            .send();
        async move { json_of(request.await.unwrap()).await.1 }
    });
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    let body = attack.await.unwrap();
    assert!(body.get("ok").is_some(), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_document_cannot_make_an_index_build_a_cross_product_of_keys() {
    let server = two_apps(&[], MISBEHAVE).await;
    let created = raw(
        &server,
        json!({"op": "create-index", "keys": {"a": 1, "b": 1, "c": 1}}),
    )
    .await;
    assert_eq!(created["ok"], true, "{created}");
    let rss_before = server.rss_kib();
    let many: Vec<u32> = (0..3000).collect();
    let started = Instant::now();
    let body = raw(
        &server,
        json!({"op": "insert", "doc": {"a": many, "b": many, "c": many}}),
    )
    .await;
    assert_eq!(body["error"], "limit-exceeded", "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    let grown_mib = server.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 100, "the server grew by {grown_mib} MiB");
    // Nothing was half-written.
    let count = raw(&server, json!({"op": "count", "filter": {}})).await;
    assert_eq!(count["ok"], 0, "{count}");
}

#[tokio::test]
async fn an_update_cannot_grow_a_document_past_the_limit() {
    let server = two_apps(&[], MISBEHAVE).await;
    let mut doc = serde_json::Map::new();
    doc.insert("_id".into(), json!("d"));
    for i in 0..70 {
        doc.insert(format!("l{i}"), json!([]));
    }
    raw(&server, json!({"op": "insert", "doc": doc})).await;
    let rss_before = server.rss_kib();
    // 1.4 KB of update padding 70 arrays to 100,000 elements each.
    let padding: serde_json::Map<String, Value> =
        (0..70).map(|i| (format!("l{i}.99999"), json!(1))).collect();
    let body = raw(
        &server,
        json!({"op": "update", "filter": {"_id": "d"}, "update": {"$set": padding}}),
    )
    .await;
    assert_eq!(body["error"], "limit-exceeded", "{body}");
    // Two 9 MB values: each update is under 16 MiB, the document would not be.
    let big = "x".repeat(9 * 1024 * 1024);
    let first = raw(
        &server,
        json!({"op": "update", "filter": {"_id": "d"}, "update": {"$set": {"a": big}}}),
    )
    .await;
    assert_eq!(
        first["ok"]["modified"],
        1,
        "{}",
        &first.to_string()[..200.min(first.to_string().len())]
    );
    let second = raw(
        &server,
        json!({"op": "update", "filter": {"_id": "d"}, "update": {"$set": {"b": big}}}),
    )
    .await;
    assert_eq!(second["error"], "limit-exceeded");
    let stored = raw(&server, json!({"op": "get", "id": "d"})).await;
    let stored: Value = serde_json::from_str(stored["ok"].as_str().unwrap()).unwrap();
    assert!(stored.get("b").is_none());
    assert_eq!(stored["l0"], json!([]));
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    let grown_mib = server.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 200, "the server grew by {grown_mib} MiB");
}

#[tokio::test]
async fn slow_queries_of_one_app_hold_neither_the_blocking_pool_nor_other_apps() {
    let manifest = MISBEHAVE.replace("timeout = \"20s\"", "timeout = \"2s\"");
    let server = two_apps(&[], &manifest).await;
    let long: Vec<u32> = (0..500).collect();
    let docs: Vec<Value> = (0..400).map(|i| json!({"i": i, "list": long})).collect();
    let inserted = raw(&server, json!({"op": "insert-many", "docs": docs})).await;
    assert_eq!(inserted["ok"], 400, "{inserted}");
    // Each count tests every element against every branch: seconds of work.
    let branches: Vec<Value> = (1_000_000..1_003_000)
        .map(|i| json!({ "list": i }))
        .collect();
    let slow = json!({"op": "count", "filter": {"$or": branches}});
    let started = Instant::now();
    let attacks: Vec<_> = (0..40)
        .map(|_| {
            let request = server.post("/bad/db-raw").json(&slow).send();
            tokio::spawn(async move { request.await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    for attack in attacks {
        let status = attack.await.unwrap();
        assert!(matches!(status, 200 | 503 | 504), "{status}");
    }
    // The work of the calls that timed out was cancelled with them: the
    // attacker's own database is free again at once.
    let freed = Instant::now();
    let count = raw(&server, json!({"op": "count", "filter": {"i": 1}})).await;
    assert_eq!(count["ok"], 1, "{count}");
    assert!(
        freed.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        freed.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn one_app_cannot_take_every_instance_slot() {
    let manifest = MISBEHAVE.replace("timeout = \"20s\"", "timeout = \"3s\"");
    let env = [("KILN_MAX_INSTANCES", "4"), ("KILN_APP_MAX_INSTANCES", "2")];
    let server = two_apps(&env, &manifest).await;
    let started = Instant::now();
    let spins: Vec<_> = (0..2)
        .map(|_| {
            let request = server.get("/bad/spin").send();
            tokio::spawn(async move { json_of(request.await.unwrap()).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The attacker's third request waits for one of its own two slots...
    let third = tokio::spawn({
        let request = server.get("/bad/ok").send();
        async move { (request.await.unwrap().status().as_u16(), started.elapsed()) }
    });
    // ...while the victim, on the same server, is served at once.
    victim_answers(&server, "/ok", Duration::from_secs(1)).await;
    for spin in spins {
        let (status, body) = spin.await.unwrap();
        assert_eq!((status, error_code(&body)), (504, "timeout"));
    }
    let (status, answered_after) = third.await.unwrap();
    assert_eq!(status, 200);
    assert!(
        answered_after >= Duration::from_millis(2900),
        "the third instance ran beside the other two, answering after {answered_after:?}"
    );
}

#[tokio::test]
async fn an_app_whose_guests_spin_leaves_another_apps_requests_quick() {
    let manifest = MISBEHAVE.replace("timeout = \"20s\"", "timeout = \"4s\"");
    let server = two_apps(&[], &manifest).await;
    for path in ["/victim/ok", "/bad/ok"] {
        assert_eq!(server.get(path).send().await.unwrap().status(), 200);
    }
    // More spinning guests than cores, all of one app.
    let spins: Vec<_> = (0..16)
        .map(|_| {
            let request = server.get("/bad/spin").send();
            tokio::spawn(async move { request.await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waits = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let response = server.get("/victim/ok").send().await.unwrap();
        assert_eq!(response.status(), 200);
        waits.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    waits.sort();
    let (median, p90) = (waits[20], waits[36]);
    assert!(
        median < Duration::from_millis(15) && p90 < Duration::from_millis(40),
        "the other app waited {median:?} (median), {p90:?} (p90) behind the spinning app"
    );
    for spin in spins {
        assert_eq!(spin.await.unwrap(), 504);
    }
}

#[tokio::test]
async fn a_full_instance_pool_answers_503_overloaded_not_a_trap() {
    let manifest = MISBEHAVE.replace("timeout = \"20s\"", "timeout = \"2s\"");
    let env = [("KILN_MAX_INSTANCES", "2"), ("KILN_APP_MAX_INSTANCES", "2")];
    let server = two_apps(&env, &manifest).await;
    let spins: Vec<_> = (0..2)
        .map(|_| {
            let request = server.get("/bad/spin").send();
            tokio::spawn(async move { request.await.unwrap().status().as_u16() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = json_of(server.get("/victim/ok").send().await.unwrap()).await;
    assert_eq!((status, error_code(&body)), (503, "overloaded"), "{body}");
    for spin in spins {
        assert_eq!(spin.await.unwrap(), 504);
    }
    victim_answers(&server, "/ok", Duration::from_secs(1)).await;
}

#[tokio::test]
async fn one_apps_job_backlog_does_not_delay_another_apps_jobs() {
    let server = two_apps(&[], MISBEHAVE).await;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    // Past-due jobs run now, not before everything else.
    schedule_many(&server, "/bad/schedule-many/500?fn=bad&tag=past", 500).await;
    // 2,000 jobs due at one instant, then the victim's due a moment later:
    // in a queue ordered by due time alone, all of them come first.
    let due = now_ms() + 8_000;
    let flood = format!("/bad/schedule-many/2000?fn=bad&tag=flood&when={due}");
    schedule_many(&server, &flood, 2000).await;
    let victim = format!("/victim/schedule-many/1?fn=bad&tag=victim&when={}", due + 1);
    schedule_many(&server, &victim, 1).await;
    // On a loaded machine scheduling can outlast the 8 s; the victim's job
    // is then past due when it is stored, and is owed a run from then on.
    let owed_from = due.max(now_ms());
    loop {
        let (_, runs) = json_of(server.get("/victim/cron-runs").send().await.unwrap()).await;
        if runs.as_array().is_some_and(|r| !r.is_empty()) {
            break;
        }
        let late = now_ms().saturating_sub(owed_from);
        assert!(
            late < 1_500,
            "the victim's job waited {late} ms behind the backlog"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    victim_answers(&server, "/ok", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn guest_output_is_one_bounded_log_event_and_counted_per_app() {
    let server = two_apps(&[("KILN_APP_LOG_BYTES_PER_MINUTE", "300000")], MISBEHAVE).await;
    let before = server.log().len();
    let response = server.get("/bad/log-lines/65536").send().await.unwrap();
    assert_eq!(response.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    let grown = log.len() - before;
    // 64 KiB of newlines, escaped: one event of about 128 KiB.
    assert!(grown < 200_000, "the log grew by {grown} bytes");
    assert_eq!(
        log[before..]
            .lines()
            .filter(|l| l.contains("kiln::guest"))
            .count(),
        1
    );
    for _ in 0..10 {
        server.get("/bad/log-lines/65536").send().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = server.log().len() - before;
    assert!(
        grown < 400_000,
        "the app wrote {grown} bytes of log in a minute"
    );
    victim_answers(&server, "/ok", Duration::from_secs(1)).await;
    // What left no event is still counted: one line for the app within
    // seconds, with the invocations' streams and bytes dropped.
    let reported = |log: &str| {
        log[before..]
            .lines()
            .filter(|l| l.contains("guest output dropped: app `bad`"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while reported(&server.log()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lines = reported(&server.log());
    assert_eq!(lines.len(), 1, "{lines:?}");
    let bytes: u64 = lines[0]
        .split(" bytes left no log event")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(bytes >= 500_000, "{}", lines[0]);
}

/// A connection from `source` (another loopback address than the tests'
/// own client) that sends half a request head.
async fn half_open(source: &str, server: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server).await.unwrap();
    let _ = stream
        .write_all(b"GET /victim/ok HTTP/1.1\r\nHost: x\r\n")
        .await;
    stream
}

/// Whether the server closed (or answered and closed) the connection
/// within `wait`.
async fn closed_within(stream: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slow_clients_cannot_hold_every_connection() {
    let env = [
        ("KILN_HEADER_TIMEOUT", "2s"),
        ("KILN_MAX_CONNECTIONS_PER_IP", "20"),
    ];
    let server = two_apps(&env, MISBEHAVE).await;
    let addr = server.addr();
    let mut slow = Vec::new();
    for _ in 0..60 {
        slow.push(half_open("127.0.0.2", addr).await);
    }
    // Past the cap, connections are refused at once.
    let mut refused = 0;
    for stream in &mut slow[20..] {
        if closed_within(stream, Duration::from_millis(500)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 40);
    victim_answers(&server, "/ok", Duration::from_secs(1)).await;
    // The accepted ones are dropped once the head is late.
    let started = Instant::now();
    for stream in &mut slow[..20] {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(1000));
    // A kept-alive connection that goes idle is closed too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /victim/ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let idle_since = Instant::now();
    assert!(closed_within(&mut idle, Duration::from_secs(5)).await);
    assert!(idle_since.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test]
async fn a_flood_of_unfinished_heads_past_the_descriptor_limit_leaves_new_clients_answered() {
    // The soft limit is raised to the hard one at start, and logged.
    let raised = Server::start_with_open_files(128, 256, &[]);
    let log = raised.log();
    assert!(log.contains("open-file limit: 256"), "{log}");
    drop(raised);

    // A head timeout far past the test: only shedding can make room.
    let server = Server::start_with_open_files(256, 256, &[("KILN_HEADER_TIMEOUT", "30s")]);
    let component = &examples().misbehave;
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", component)])
        .await;
    let addr = server.addr();
    let mut flood = Vec::new();
    for i in 0..300 {
        flood.push(half_open(&format!("127.0.0.{}", 2 + i % 20), addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new client, on a connection of its own each time, is answered.
    for _ in 0..5 {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let started = Instant::now();
        let response = client
            .get(format!("{}/victim/ok", server.url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("the server stayed reachable");
        assert_eq!(response.status(), 200);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "answered after {elapsed:?}"
        );
    }
    // The oldest unfinished heads were the ones closed.
    assert!(closed_within(&mut flood[0], Duration::from_millis(500)).await);
    assert!(server.log().contains("had not sent a request head"));
}

#[tokio::test]
async fn an_app_name_cannot_capture_another_apps_traffic() {
    let server = two_apps(&[], MISBEHAVE).await;
    let through_host = || {
        server
            .get("/victim/ok")
            .header("host", "apps.example.com")
            .send()
    };
    let response = through_host().await.unwrap();
    assert_eq!(response.status(), 200);
    // An app named like the host's first label changes nothing.
    let hello = "[functions.hello]\ncomponent = \"hello.wasm\"\n[[routes]]\npath = \"/hello/:name\"\nfunction = \"hello\"\n";
    server
        .deploy_ok("apps", hello, &[("hello", &examples().hello)])
        .await;
    let response = through_host().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn the_outbound_allow_list_fails_closed() {
    let server = Server::start();
    let component = &examples().misbehave;
    let with_hosts = |hosts: &str| {
        format!(
            "[functions.bad]\ncomponent = \"m.wasm\"\nallowed_outbound_hosts = {hosts}\n[[routes]]\npath = \"/*rest\"\nfunction = \"bad\"\n"
        )
    };
    for bad in [
        r#"["127.0.0.1:99999"]"#,
        r#"["127.0.0.1:"]"#,
        r#"["*:http"]"#,
    ] {
        let (status, body) = server
            .deploy("bad", &with_hosts(bad), &[("bad", component)])
            .await;
        assert_eq!(
            (status, error_code(&body)),
            (400, "invalid_manifest"),
            "{bad}: {body}"
        );
    }
    let port = server.addr().port();
    let admin = format!("127.0.0.1:{port}/admin/v1/apps");
    // A wildcard never reaches loopback, by address or by name.
    server
        .deploy_ok("bad", &with_hosts(r#"["*"]"#), &[("bad", component)])
        .await;
    for url in [
        format!("http://{admin}"),
        format!("http://localhost:{port}/admin/v1/apps"),
    ] {
        let text = fetch(&server, &url).await;
        assert!(
            text.contains("error") && text.contains("Prohibited"),
            "{url}: {text}"
        );
    }
    // Naming the address in the manifest allows it.
    let exact = format!(r#"["127.0.0.1:{port}"]"#);
    server
        .deploy_ok("bad", &with_hosts(&exact), &[("bad", component)])
        .await;
    let text = fetch(&server, &format!("http://{admin}")).await;
    assert!(text.contains("status 401"), "{text}");
}

#[tokio::test]
async fn the_data_directory_is_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Server::start_in(&data, Some(kiln_tests::ADMIN_KEY), true);
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", &examples().misbehave)])
        .await;
    assert_eq!(
        server.get("/victim/incr").send().await.unwrap().status(),
        200
    );
    let mut checked = 0;
    let mut stack = vec![data.clone()];
    while let Some(path) = stack.pop() {
        // The test harness itself writes the server's log there.
        if path.ends_with("test-server.log") {
            continue;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode & 0o777);
        checked += 1;
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(checked > 5, "checked {checked} paths");
}

#[tokio::test]
async fn a_damaged_component_is_reported_and_replaced_by_a_good_upload() {
    let server = Server::start();
    let bytes = std::fs::read(&examples().misbehave).unwrap();
    let digest = server.upload(bytes.clone()).await;
    let file = server
        .data_dir
        .join("objects/components")
        .join(format!("{}.wasm", digest.replace(':', "-")));
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let head = server
        .admin(
            reqwest::Method::HEAD,
            &format!("/admin/v1/components/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 404);
    assert_eq!(server.upload(bytes.clone()).await, digest);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", &examples().misbehave)])
        .await;
    assert_eq!(server.get("/victim/ok").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn a_stopped_server_leaves_no_job_marked_running() {
    let data = tempfile::tempdir().unwrap();
    let env = [("KILN_SHUTDOWN_GRACE", "1s")];
    let server = Server::start_in_with_env(data.path(), &env);
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", &examples().misbehave)])
        .await;
    schedule_many(
        &server,
        "/victim/schedule-many/1?fn=bad&when=now&sleep_ms=15000",
        1,
    )
    .await;
    let started = Instant::now();
    while !runs(&server).await.to_string().contains("\"running\"") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}",
            runs(&server).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopping.elapsed()
    );
    let server = Server::start_in_with_env(data.path(), &env);
    let history = runs(&server).await;
    let text = history.to_string();
    assert!(!text.contains("\"running\""), "{history}");
    assert!(text.contains("interrupted"), "{history}");
}

/// The victim app's run history.
async fn runs(server: &Server) -> Value {
    let response = server
        .admin(reqwest::Method::GET, "/admin/v1/apps/victim/runs")
        .send()
        .await
        .unwrap();
    json_of(response).await.1
}

#[tokio::test]
async fn a_tampered_compile_cache_entry_is_compiled_again_not_loaded() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), false);
    server
        .deploy_ok("victim", MISBEHAVE, &[("bad", &examples().misbehave)])
        .await;
    assert_eq!(server.get("/victim/ok").send().await.unwrap().status(), 200);
    server.kill();
    // Every cached artifact: flip one byte of its code.
    let mut cached = Vec::new();
    let mut stack = vec![data.path().join("cache")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "kcwasm") {
                cached.push(path);
            }
        }
    }
    assert!(!cached.is_empty());
    let mut originals = Vec::new();
    for path in &cached {
        let mut bytes = std::fs::read(path).unwrap();
        originals.push(bytes.clone());
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(path, &bytes).unwrap();
    }
    let server = Server::start_in(data.path(), Some(kiln_tests::ADMIN_KEY), false);
    assert_eq!(server.get("/victim/ok").send().await.unwrap().status(), 200);
    assert!(server.log().contains("does not verify"), "{}", server.log());
    // The bad copy was replaced by a good one.
    for (path, original) in cached.iter().zip(&originals) {
        let now = std::fs::read(path).unwrap();
        assert_eq!(now.len(), original.len());
        assert_ne!(now[now.len() / 2], original[original.len() / 2] ^ 0xff);
    }
}

/// Calls a `schedule-many` path and checks that all `n` jobs were scheduled.
async fn schedule_many(server: &Server, path: &str, n: u64) {
    let (status, body) = json_of(server.get(path).send().await.unwrap()).await;
    assert_eq!((status, &body["scheduled"]), (200, &json!(n)), "{body}");
}

/// What the attacker app's outbound GET to `url` gave (`status N` or the error).
async fn fetch(server: &Server, url: &str) -> String {
    let response = server
        .get(&format!("/bad/fetch?{url}"))
        .send()
        .await
        .unwrap();
    response.text().await.unwrap()
}

/// An upstream on 127.0.0.1 that answers one request with 200 and hands
/// back the request head it read.
async fn one_request_upstream() -> (u16, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let head = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request head was cut off");
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (port, head)
}

#[tokio::test]
async fn a_proxying_function_does_not_leak_the_triggers_headers_upstream() {
    let server = Server::start();
    let (port, head) = one_request_upstream().await;
    let manifest = format!(
        "[functions.bad]\ncomponent = \"m.wasm\"\nallowed_outbound_hosts = [\"127.0.0.1:{port}\"]\n[[routes]]\npath = \"/*rest\"\nfunction = \"bad\"\n"
    );
    server
        .deploy_ok("bad", &manifest, &[("bad", &examples().misbehave)])
        .await;
    let response = server
        .get(&format!("/bad/forward?http://127.0.0.1:{port}/up"))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(text.contains("status 200"), "{text}");
    let head = tokio::time::timeout(Duration::from_secs(10), head)
        .await
        .unwrap()
        .unwrap();
    assert!(head.contains("kiln-note: set by the function"), "{head}");
    for name in ["kiln-app", "kiln-route", "kiln-params", "kiln-request-id"] {
        assert!(
            !head.contains(&format!("{name}:")),
            "{name} went upstream: {head}"
        );
    }
}

/// The attacker's app with a collection anyone may list, and the victim's
/// with one anyone may read.
const DATA_MANIFEST: &str = r#"
[functions.bad]
component = "misbehave.wasm"
limits = { timeout = "20s" }

[[routes]]
path = "/*rest"
function = "bad"

[collections.items]
list = "public"
get = "public"
"#;

#[tokio::test]
async fn a_flood_of_expensive_client_queries_leaves_another_app_answering() {
    let server = Server::start();
    let component = &examples().misbehave;
    server
        .deploy_ok("bad", DATA_MANIFEST, &[("bad", component)])
        .await;
    server
        .deploy_ok("victim", DATA_MANIFEST, &[("bad", component)])
        .await;
    let long: Vec<u32> = (0..500).collect();
    let docs: Vec<Value> = (0..50).map(|i| json!({"i": i, "list": long})).collect();
    let inserted = raw(
        &server,
        json!({"op": "insert-many", "collection": "items", "docs": docs}),
    )
    .await;
    assert_eq!(inserted["ok"], 50, "{inserted}");
    let victim_doc = server
        .admin(reqwest::Method::POST, "/admin/v1/apps/victim/data/items")
        .json(&json!({"_id": "v", "n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(victim_doc.status(), 201);
    // Each query tests every element of every document against every
    // branch: a fraction of a second to a second of work (within the
    // 16 KiB a parameter may hold).
    let path = expensive_count("items");
    let one = Instant::now();
    let (status, body) = json_of(server.get(&path).send().await.unwrap()).await;
    assert_eq!((status, &body["count"]), (200, &json!(0)), "{body}");
    assert!(
        one.elapsed() > Duration::from_millis(100),
        "the query is not expensive: {:?}",
        one.elapsed()
    );
    let started = Instant::now();
    let attacks: Vec<_> = (0..60)
        .map(|_| {
            let request = server.get(&path).send();
            tokio::spawn(async move {
                let response = request.await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (status, error_code(&body).to_string(), Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    victim_answers(&server, "/incr", Duration::from_secs(2)).await;
    for _ in 0..5 {
        let asked = Instant::now();
        let response = server
            .get("/victim/_kiln/data/items/v")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "the victim's data call waited {:?}",
            asked.elapsed()
        );
    }
    let mut shed = 0;
    for attack in attacks {
        let (status, code, ended) = attack.await.unwrap();
        // Answered, cut at the query deadline, or shed by the app's slots;
        // never left to run.
        assert!(
            matches!(
                (status, code.as_str()),
                (200, _) | (400, "query_limit_exceeded") | (503, "overloaded")
            ),
            "{status} {code}"
        );
        shed += usize::from(status == 503);
        assert!(
            ended - started < Duration::from_secs(40),
            "a query ran {:?}",
            ended - started
        );
    }
    assert!(
        shed > 0,
        "60 costly queries at once: the app's 16 slots shed some"
    );
}

/// A client's count on `collection` of the attacker app that tests every
/// element of every document against 800 branches.
fn expensive_count(collection: &str) -> String {
    let branches: Vec<Value> = (1_000_000..1_000_800)
        .map(|i| json!({ "list": i }))
        .collect();
    let filter = json!({ "$or": branches }).to_string();
    assert!(filter.len() < 16 * 1024);
    let encoded: String = form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    format!("/bad/_kiln/data/{collection}?count=true&filter={encoded}")
}

#[tokio::test]
async fn a_client_query_cannot_run_past_its_deadline() {
    let server = Server::start();
    server
        .deploy_ok("bad", DATA_MANIFEST, &[("bad", &examples().misbehave)])
        .await;
    let long: Vec<u32> = (0..500).collect();
    for _ in 0..8 {
        let docs: Vec<Value> = (0..500).map(|i| json!({"i": i, "list": long})).collect();
        let inserted = raw(
            &server,
            json!({"op": "insert-many", "collection": "items", "docs": docs}),
        )
        .await;
        assert_eq!(inserted["ok"], 500, "{inserted}");
    }
    // 4,000 documents of 500 elements against 800 branches: far more than
    // the 5 s a client's query may run.
    let started = Instant::now();
    let (status, body) = json_of(server.get(&expensive_count("items")).send().await.unwrap()).await;
    let took = started.elapsed();
    assert_eq!(
        (status, error_code(&body)),
        (400, "query_limit_exceeded"),
        "{body}"
    );
    assert!(took < Duration::from_secs(8), "the query ran {took:?}");
    // Its work was cancelled with it: the app's database answers at once.
    let freed = Instant::now();
    let count = raw(
        &server,
        json!({"op": "count", "collection": "items", "filter": {"i": 1}}),
    )
    .await;
    assert_eq!(count["ok"], 8, "{count}");
    assert!(
        freed.elapsed() < Duration::from_secs(2),
        "waited {:?}",
        freed.elapsed()
    );
}
