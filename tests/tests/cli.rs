//! The `kiln` command line: scaffolding, building, serving an app folder,
//! and one-line errors.

use std::process::{Command, Output};

use kiln_tests::{kiln_binary, workspace};

fn kiln(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(kiln_binary())
        .args(args)
        .current_dir(dir)
        // Share compiled guest dependencies with the rest of the test run.
        .env("CARGO_TARGET_DIR", workspace().join("target"))
        .output()
        .unwrap()
}

fn assert_one_line_failure(output: &Output, expected: &str) {
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, got: {stderr}");
    assert!(lines[0].starts_with("kiln: "), "{stderr}");
    assert!(lines[0].contains(expected), "`{expected}` not in: {stderr}");
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(
        &["deploy", "no-such-folder", "--admin-key", "k"],
        dir.path(),
    );
    assert_one_line_failure(&out, "kiln.toml");

    std::fs::write(dir.path().join("server.toml"), "[server]\nlisten = 42\n").unwrap();
    let out = kiln(&["serve", "--config", "server.toml"], dir.path());
    assert_one_line_failure(&out, "server.toml");

    let out = kiln(&["new", "Not A Name"], dir.path());
    assert_one_line_failure(&out, "invalid app name");

    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(
        dir.path().join("app/kiln.toml"),
        "[functions.f]\nsource = \"f\"\n[[routes]]\npath = \"x\"\nfunction = \"g\"\n",
    )
    .unwrap();
    let out = kiln(&["build", "app"], dir.path());
    assert_one_line_failure(&out, "routes[0].function");
}

#[tokio::test]
async fn kiln_new_scaffolds_an_app_that_kiln_serve_builds_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(&["new", "greeter"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("greeter/kiln.toml").is_file());

    let data = dir.path().join("data");
    let mut child = Command::new(kiln_binary())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-key",
            "k",
            "--data-dir",
        ])
        .arg(&data)
        .args(["--app", "greeter"])
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", workspace().join("target"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead;
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let line = stdout
            .lines()
            .next()
            .expect("kiln serve printed its address")
            .unwrap();
        line.strip_prefix("kiln listening on ").unwrap().to_string()
    };
    let body: serde_json::Value = reqwest::get(format!("{url}/greeter/hello/world"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body["message"], "Hello, world!");
}
