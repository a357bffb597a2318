//! `@kiln/client` (sdk/client) against a real server: its own Node tests
//! (sdk/client/test: auth, files and collections) run with the `accounts`
//! example, a bucket and a collection deployed.

use std::process::Command;

use kiln_tests::{Server, examples, workspace};

const MANIFEST: &str = r#"
[auth]
argon2 = { memory_kib = 64, iterations = 1, parallelism = 1 }

[functions.accounts]
component = "accounts.wasm"

[[routes]]
path = "/me"
function = "accounts"
auth = "user"

[buckets.docs]
read = "owner"
upload = "owner"
replace = "owner"
delete = "owner"
max_size = "64 MiB"

[collections.todos]
list = { filter = { owner = "@user.id" } }
get = { filter = { owner = "@user.id" } }
create = "user"
update = { filter = { owner = "@user.id" } }
delete = { filter = { owner = "@user.id" } }
on_create = { owner = "@user.id" }
"#;

#[tokio::test]
async fn the_client_library_signs_in_refreshes_once_calls_routes_and_moves_files() {
    let server = Server::start();
    server
        .deploy_ok("shop", MANIFEST, &[("accounts", &examples().accounts)])
        .await;
    let dir = workspace().join("sdk/client");
    assert!(
        dir.join("node_modules").is_dir(),
        "sdk/client has no node_modules: run scripts/setup"
    );
    let build = Command::new("npm")
        .args(["run", "--silent", "build"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "building @kiln/client: {}",
        String::from_utf8_lossy(&build.stdout)
    );
    let url = format!("{}/shop", server.url);
    let run = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args(["--test", "test/"])
            .env("KILN_APP_URL", url)
            .current_dir(dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "the client's tests failed:\n{output}");
    assert!(output.contains("# pass 10"), "{output}");
}
