//! `kiln new`: an app folder with one HTTP function in Rust, JavaScript or
//! TypeScript.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use kiln::server::manifest::{app_name_rule, is_valid_app_name};

#[derive(Clone, Copy, ValueEnum)]
pub enum Lang {
    Rust,
    Js,
    Ts,
}

#[derive(Args)]
pub struct NewArgs {
    /// The app's name; also its folder.
    name: String,
    /// The function's language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// Where the SDK is (until it is published): defaults to this source
    /// tree's `sdk/rust` or `sdk/js`.
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
    let default_sdk = match args.lang {
        Lang::Rust => "../sdk/rust",
        Lang::Js | Lang::Ts => "../sdk/js",
    };
    let sdk = args
        .sdk_path
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(default_sdk));
    let sdk = std::fs::canonicalize(&sdk)
        .with_context(|| format!("the SDK is not at {}; pass --sdk-path", sdk.display()))?;
    let sdk = sdk.display().to_string();
    let files = match args.lang {
        Lang::Rust => rust_files(&args.name, &sdk),
        Lang::Js => js_files(&args.name, &sdk, "src/index.js", INDEX_JS),
        Lang::Ts => {
            let mut files = js_files(&args.name, &sdk, "src/index.ts", INDEX_TS);
            files.push(("tsconfig.json".into(), TSCONFIG.into()));
            files
        }
    };
    for (path, contents) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
        std::fs::write(&path, contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !matches!(args.lang, Lang::Rust) {
        let installed = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&root)
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            bail!(
                "created {}/, but `npm install` failed there; run it again before building",
                args.name
            );
        }
    }
    println!(
        "created {0}/; next: `kiln serve --app {0}` and open http://127.0.0.1:8080/{0}/hello/world",
        args.name
    );
    Ok(())
}

fn manifest(name: &str, source: &str) -> String {
    MANIFEST.replace("{name}", name).replace("{source}", source)
}

fn rust_files(name: &str, sdk: &str) -> Vec<(String, String)> {
    let crate_name = format!("{name}-http");
    vec![
        ("kiln.toml".into(), manifest(name, &crate_name)),
        (
            format!("{crate_name}/Cargo.toml"),
            CARGO_TOML
                .replace("{crate}", &crate_name)
                .replace("{sdk}", sdk),
        ),
        (format!("{crate_name}/src/lib.rs"), LIB_RS.into()),
        (".gitignore".into(), "target/\n.kiln/\n".into()),
    ]
}

fn js_files(name: &str, sdk: &str, entry: &str, code: &str) -> Vec<(String, String)> {
    let package = serde_json::json!({
        "name": name,
        "private": true,
        "type": "module",
        "dependencies": { "@kiln/sdk": format!("file:{sdk}") },
    });
    vec![
        ("kiln.toml".into(), manifest(name, entry)),
        ("package.json".into(), format!("{:#}\n", package)),
        (entry.into(), code.into()),
        (".gitignore".into(), "node_modules/\n.kiln/\n".into()),
    ]
}

const MANIFEST: &str = r#"name = "{name}"

[variables]
greeting = "Hello"

[functions.http]
source = "{source}"

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

const INDEX_JS: &str = r#"import { config } from '@kiln/sdk';

export default {
  // GET /hello/:name: the route's parameters are in ctx.params, the
  // manifest's variables in env (or config.get).
  async fetch(request, env, ctx) {
    const greeting = env.greeting ?? config.get('greeting') ?? 'Hello';
    return Response.json({ message: `${greeting}, ${ctx.params.name}!` });
  },
};
"#;

const INDEX_TS: &str = r#"import type { Handlers } from '@kiln/sdk';

export default {
  // GET /hello/:name: the route's parameters are in ctx.params, the
  // manifest's variables in env.
  async fetch(request, env, ctx) {
    const greeting = env.greeting ?? 'Hello';
    return Response.json({ message: `${greeting}, ${ctx.params.name}!` });
  },
} satisfies Handlers;
"#;

/// For editors; `kiln build` type-checks with the same settings.
const TSCONFIG: &str = r#"{
  "compilerOptions": {
    "strict": true,
    "noEmit": true,
    "target": "ES2022",
    "module": "ESNext",
    "moduleResolution": "Bundler",
    "lib": ["ES2022", "DOM", "DOM.Iterable"],
    "types": [],
    "skipLibCheck": true
  },
  "include": ["src"]
}
"#;
