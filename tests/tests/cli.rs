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

    // A TOML error: the reason on the first line, then the line it is on
    // and a caret under the spot.
    std::fs::write(dir.path().join("server.toml"), "[server]\nlisten = 42\n").unwrap();
    let out = kiln(&["serve", "--config", "server.toml"], dir.path());
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with("kiln: config file server.toml: line 2, column 10: "),
        "{stderr}"
    );
    assert_eq!(lines[2], "2 | listen = 42", "{stderr}");
    assert_eq!(lines[3], "  |          ^^", "{stderr}");

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

/// `kiln new greeter --lang LANG`, then `kiln serve --app greeter` builds
/// and serves it.
async fn scaffold_and_serve(lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln(&["new", "greeter", "--lang", lang], dir.path());
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
            .find(|l| {
                l.as_ref()
                    .is_ok_and(|l| l.starts_with("kiln listening on "))
            })
            .expect("kiln serve printed its address")
            .unwrap();
        line.strip_prefix("kiln listening on ").unwrap().to_string()
    };
    kiln::install_crypto_provider();
    let body: serde_json::Value = reqwest::get(format!("{url}/greeter/hello/world"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(body["message"], "Hello, world!", "{lang}");
}

#[tokio::test]
async fn kiln_new_scaffolds_a_rust_app_that_kiln_serve_builds_and_serves() {
    scaffold_and_serve("rust").await;
}

#[tokio::test]
async fn kiln_new_scaffolds_a_javascript_app_that_kiln_serve_builds_and_serves() {
    scaffold_and_serve("js").await;
}

#[tokio::test]
async fn kiln_new_scaffolds_a_typescript_app_that_kiln_serve_builds_and_serves() {
    scaffold_and_serve("ts").await;
}

#[test]
fn kiln_build_reports_a_typescript_type_error_and_can_skip_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("ts-broken");
    std::fs::create_dir_all(app.join("src")).unwrap();
    for file in ["kiln.toml", "src/index.ts"] {
        std::fs::copy(
            workspace().join("tests/apps/ts-broken").join(file),
            app.join(file),
        )
        .unwrap();
    }
    let out = kiln(&["build", "ts-broken"], dir.path());
    assert!(!out.status.success(), "a type error must fail the build");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("src/index.ts(9,"), "{stderr}");
    assert!(stderr.contains("error TS2345"), "{stderr}");
    assert!(stderr.contains("--no-typecheck"), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("kiln: "),
        "{stderr}"
    );
    assert!(!app.join(".kiln/build/broken.wasm").exists());

    let out = kiln(&["build", "ts-broken", "--no-typecheck"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // A line per step, with its time.
    for step in ["analysed (", "bundled (", "componentized ("] {
        assert!(stderr.contains(step), "`{step}` not in {stderr}");
    }
    assert!(app.join(".kiln/build/broken.wasm").is_file());
}

#[test]
fn kiln_check_lists_open_collections_and_strict_refuses_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kiln.toml"),
        r#"
[functions.api]
component = "api.wasm"

[collections.posts]
list = "public"
update = { filter = { published = true } }

[collections.notes]
list = { filter = { owner = "@user.id" } }
"#,
    )
    .unwrap();
    let output = kiln(&["check", "."], dir.path());
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("collections.posts.list: anonymous callers may list"),
        "{stderr}"
    );
    assert!(
        stderr.contains("collections.posts.update: the filter rule does not mention the caller"),
        "{stderr}"
    );
    assert!(!stderr.contains("collections.notes"), "{stderr}");
    let strict = kiln(&["check", "--strict", "."], dir.path());
    assert!(!strict.status.success());
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("--strict refuses"),
        "{strict:?}"
    );
    // A bad rule is a one-line reason naming the field.
    std::fs::write(
        dir.path().join("kiln.toml"),
        "[functions.api]\ncomponent = \"api.wasm\"\n\n[collections.notes]\nlist = { filter = { owner = \"@user.name\" } }\n",
    )
    .unwrap();
    let bad = kiln(&["check", "."], dir.path());
    assert_one_line_failure(&bad, "collections.notes.list");
}
