//! `kiln new`: an app folder with one Rust HTTP function.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use kiln::server::manifest::{app_name_rule, is_valid_app_name};

#[derive(Args)]
pub struct NewArgs {
    /// The app's name; also its folder.
    name: String,
    /// Where the Rust SDK is (until it is published): defaults to this source tree's.
    #[arg(long)]
    sdk_path: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    if !is_valid_app_name(&args.name) {
        bail!("invalid app name `{}`: {}", args.name, app_name_rule());
    }
    let root = PathBuf::from(&args.name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let sdk = match args.sdk_path {
        Some(path) => path,
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/rust"),
    };
    let sdk = std::fs::canonicalize(&sdk)
        .with_context(|| format!("the Rust SDK is not at {}; pass --sdk-path", sdk.display()))?;
    let crate_name = format!("{}-http", args.name);
    let files = [
        (
            "kiln.toml".to_string(),
            MANIFEST
                .replace("{name}", &args.name)
                .replace("{crate}", &crate_name),
        ),
        (
            format!("{crate_name}/Cargo.toml"),
            CARGO_TOML
                .replace("{crate}", &crate_name)
                .replace("{sdk}", &sdk.display().to_string()),
        ),
        (format!("{crate_name}/src/lib.rs"), LIB_RS.to_string()),
        (".gitignore".to_string(), "target/\n.kiln/\n".to_string()),
    ];
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!(
        "created {0}/; next: `kiln serve --app {0}` and open http://127.0.0.1:8080/{0}/hello/world",
        args.name
    );
    Ok(())
}

const MANIFEST: &str = r#"name = "{name}"

[variables]
greeting = "Hello"

[functions.http]
source = "{crate}"

[[routes]]
path = "/hello/:name"
methods = ["GET"]
function = "http"
"#;

const CARGO_TOML: &str = r#"[package]
name = "{crate}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
kiln-sdk = { path = "{sdk}" }
serde_json = "1"

# A standalone crate, not part of an enclosing workspace.
[workspace]
"#;

const LIB_RS: &str = r#"use kiln_sdk::http::{Request, Response};

fn handle(req: Request) -> Response {
    let greeting = kiln_sdk::config::get("greeting").unwrap_or_else(|| "Hello".into());
    let name = req.param("name").unwrap_or("world");
    Response::json(&serde_json::json!({ "message": format!("{greeting}, {name}!") }))
}

kiln_sdk::http_function!(handle);
"#;
