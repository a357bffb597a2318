//! Support for the end-to-end tests: build the example functions once, start
//! the real `kiln` binary on port 0 with its own data directory, and talk
//! HTTP to it.

pub mod oidc_provider;
pub mod smtp_sink;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const ADMIN_KEY: &str = "test-admin-key";

/// The routes of a todo API (`todo-api` in Rust, `todos-ts` in TypeScript),
/// deployed with whichever component implements them.
pub const TODO_MANIFEST: &str = r#"
[functions.todos]
component = "todos.wasm"

[[routes]]
path = "/todos"
methods = ["GET", "POST"]
function = "todos"

[[routes]]
path = "/todos/:id"
methods = ["GET", "PATCH", "DELETE"]
function = "todos"
"#;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A command with the variables cargo sets for a test binary removed
/// (`CARGO_PKG_NAME=kiln-tests` and the like). Build scripts such as ring's
/// rerun when those change, so a nested `cargo build` that inherited them
/// would rebuild what the outer `cargo test` just built, every run.
pub fn clean_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo = (name.starts_with("CARGO_")
            && !matches!(&*name, "CARGO_HOME" | "CARGO_TARGET_DIR"))
            || name == "OUT_DIR";
        if set_by_cargo {
            command.env_remove(&*name);
        }
    }
    command
}

/// The `kiln` binary, built (once per test binary) from the current source:
/// `cargo test -p kiln-tests` alone would not rebuild another package's binary.
pub fn kiln_binary() -> PathBuf {
    static KILN: OnceLock<PathBuf> = OnceLock::new();
    KILN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/deps/..
        let mut build = clean_command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build
            .args(["build", "-p", "kiln-runtime", "--bin", "kiln"])
            .current_dir(workspace());
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "building kiln failed");
        let kiln = profile_dir.join("kiln");
        assert!(kiln.is_file(), "{} is missing", kiln.display());
        kiln
    })
    .clone()
}

/// The example components, built once per test run.
pub struct Examples {
    pub hello: PathBuf,
    pub hello_js: PathBuf,
    pub echo: PathBuf,
    pub plain: PathBuf,
    pub misbehave: PathBuf,
    pub todo_api: PathBuf,
    pub cleanup: PathBuf,
    pub accounts: PathBuf,
    pub files: PathBuf,
    pub tick_js: PathBuf,
    pub notes_js: PathBuf,
    pub todos_ts: PathBuf,
    /// `tests/apps/js/probe`: exercises the JS SDK.
    pub js_probe: PathBuf,
}

/// Builds `functions-examples` and `tests/apps/js` with `kiln build` (and
/// `misbehave` with cargo), under a file lock so parallel test binaries
/// build once.
pub fn examples() -> &'static Examples {
    static EXAMPLES: OnceLock<Examples> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let root = workspace();
        let target = root.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let lock = std::fs::File::create(target.join("kiln-examples.lock")).unwrap();
        lock.lock().unwrap();
        for app in ["functions-examples", "tests/apps/js"] {
            let status = clean_command(kiln_binary())
                .arg("build")
                .arg(root.join(app))
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "kiln build {app} failed");
        }
        let status = clean_command(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "misbehave",
            ])
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(status.success(), "building misbehave failed");
        lock.unlock().unwrap();
        let wasm = |name: &str| target.join("wasm32-wasip2/release").join(name);
        Examples {
            hello: wasm("hello_rust.wasm"),
            hello_js: root.join("functions-examples/.kiln/build/hello-js.wasm"),
            echo: wasm("echo.wasm"),
            plain: wasm("plain_http.wasm"),
            misbehave: wasm("misbehave.wasm"),
            todo_api: wasm("todo_api.wasm"),
            cleanup: wasm("cleanup.wasm"),
            accounts: wasm("accounts.wasm"),
            files: wasm("files.wasm"),
            tick_js: root.join("functions-examples/.kiln/build/tick-js.wasm"),
            notes_js: root.join("functions-examples/.kiln/build/notes.wasm"),
            todos_ts: root.join("functions-examples/.kiln/build/todos-ts.wasm"),
            js_probe: root.join("tests/apps/js/.kiln/build/probe.wasm"),
        }
    })
}

/// A `kiln serve` child process; killed on drop.
pub struct Server {
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
    // Kept alive while the server runs (None when the caller owns the folder).
    _temp: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts a server with a new temporary data directory.
    pub fn start() -> Server {
        Server::start_with_env(&[])
    }

    /// Starts a server with a new temporary data directory and extra
    /// environment variables (`KILN_MONGODB_URI`, say).
    pub fn start_with_env(env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut server = Server::spawn(&dir, Some(ADMIN_KEY), true, env, None);
        server._temp = Some(temp);
        server
    }

    /// Starts a server whose process starts with these soft and hard
    /// limits on open files (as `ulimit -Sn` and `-Hn` set them), with a
    /// new temporary data directory and extra environment variables.
    pub fn start_with_open_files(soft: u64, hard: u64, env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().to_path_buf();
        let mut server = Server::spawn(&dir, Some(ADMIN_KEY), true, env, Some((soft, hard)));
        server._temp = Some(temp);
        server
    }

    /// Starts a server on `data_dir`; with no admin key, the server uses the
    /// one stored in its data directory (generating it on first start). With
    /// `shared_cache`, compiled components are cached for every test's server;
    /// otherwise in the data directory.
    pub fn start_in(data_dir: &Path, admin_key: Option<&str>, shared_cache: bool) -> Server {
        Server::spawn(data_dir, admin_key, shared_cache, &[], None)
    }

    /// Starts a server on `data_dir` with the test admin key, the shared
    /// compile cache and extra environment variables.
    pub fn start_in_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Server::spawn(data_dir, Some(ADMIN_KEY), true, env, None)
    }

    /// `open_files`: the process's soft and hard limits on open files.
    fn spawn(
        data_dir: &Path,
        admin_key: Option<&str>,
        shared_cache: bool,
        env: &[(&str, &str)],
        open_files: Option<(u64, u64)>,
    ) -> Server {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = log_path(data_dir);
        let mut command = Command::new(kiln_binary());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
        command.envs(env.iter().copied());
        if shared_cache {
            command
                .arg("--cache-dir")
                .arg(workspace().join("target/kiln-test-cache"));
        }
        match admin_key {
            Some(key) => command.env("KILN_ADMIN_KEY", key),
            None => command.env_remove("KILN_ADMIN_KEY"),
        };
        if let Some((soft, hard)) = open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: only setrlimit runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "kiln serve exited before listening:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            if let Some(url) = line.strip_prefix("kiln listening on ") {
                break url.to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // The workspace's reqwest has rustls without a built-in provider.
        kiln::install_crypto_provider();
        Server {
            url,
            data_dir: data_dir.to_path_buf(),
            child,
            _temp: None,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                // Under the server's 10 s idle timeout, so the client never
                // reuses a connection the server is closing.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// The server's address, `127.0.0.1:PORT`.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("http://").parse().unwrap()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_path(&self.data_dir)).unwrap_or_default()
    }

    /// Uploads components and deploys `manifest` as `app`; returns the status
    /// and JSON body of the deploy call.
    pub async fn deploy(
        &self,
        app: &str,
        manifest: &str,
        components: &[(&str, &Path)],
    ) -> (u16, Value) {
        let mut digests = serde_json::Map::new();
        for (function, path) in components {
            let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let digest = self.upload(bytes).await;
            digests.insert(function.to_string(), json!(digest));
        }
        let response = self
            .admin(
                reqwest::Method::POST,
                &format!("/admin/v1/apps/{app}/deployments"),
            )
            .json(&json!({ "manifest": manifest, "components": digests }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Deploys and asserts it worked; returns the new version.
    pub async fn deploy_ok(&self, app: &str, manifest: &str, components: &[(&str, &Path)]) -> u64 {
        let (status, body) = self.deploy(app, manifest, components).await;
        assert_eq!(status, 201, "deploy failed: {body}");
        body["version"].as_u64().unwrap()
    }

    /// Uploads a component; returns its digest.
    pub async fn upload(&self, bytes: Vec<u8>) -> String {
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let response = self
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/v1/components/{digest}"),
            )
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "upload failed");
        digest
    }

    /// An admin request with the admin key.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }

    pub fn delete(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(format!("{}{path}", self.url))
    }

    /// Stops the server as an operator would (SIGTERM) and waits for it to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(self) {
        drop(self);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The server's stderr, kept in its data directory so tests can read it.
fn log_path(data_dir: &Path) -> PathBuf {
    data_dir.join("test-server.log")
}

/// The status and JSON body of a response.
pub async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }));
    (status, body)
}

/// The error code of a Kiln JSON error body.
/// A JSON call to the server with an optional bearer token and body: the
/// status and JSON body of the answer.
pub async fn call(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server
        .client
        .request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap()).await
}

pub fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}
