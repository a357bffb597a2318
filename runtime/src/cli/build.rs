//! `kiln build`: Rust functions with cargo for wasm32-wasip2, JavaScript and
//! TypeScript functions through the JS SDK's build script (type-check,
//! bundle with esbuild, componentize-js).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use kiln::server::manifest::{FunctionSpec, Language, Manifest};

/// An app folder, built.
pub struct BuiltApp {
    pub name: String,
    pub manifest: String,
    pub functions: Vec<BuiltFunction>,
}

pub struct BuiltFunction {
    pub name: String,
    pub path: PathBuf,
}

/// Where the JS SDK lives: `KILN_JS_SDK`, else the copy beside this source tree.
fn js_sdk_dir() -> PathBuf {
    std::env::var_os("KILN_JS_SDK")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/js"))
}

/// How to build.
#[derive(Clone, Copy, Debug)]
pub struct BuildOptions {
    /// Type-check TypeScript functions before bundling them.
    pub typecheck: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self { typecheck: true }
    }
}

/// Reads `dir/kiln.toml` and builds every function.
pub fn build_app(dir: &Path, options: BuildOptions) -> anyhow::Result<BuiltApp> {
    let manifest_path = dir.join("kiln.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let manifest = Manifest::parse(&text)?;
    let name = match &manifest.name {
        Some(name) => name.clone(),
        None => std::fs::canonicalize(dir)?
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .context("the app folder has no name; set `name` in kiln.toml")?,
    };
    let mut functions = Vec::new();
    for (fn_name, spec) in &manifest.functions {
        let path = build_function(dir, fn_name, spec, options)
            .with_context(|| format!("building function `{fn_name}`"))?;
        functions.push(BuiltFunction {
            name: fn_name.clone(),
            path,
        });
    }
    Ok(BuiltApp {
        name,
        manifest: text,
        functions,
    })
}

fn build_function(
    dir: &Path,
    name: &str,
    spec: &FunctionSpec,
    options: BuildOptions,
) -> anyhow::Result<PathBuf> {
    if let Some(component) = &spec.component {
        let path = dir.join(component);
        if !path.is_file() {
            bail!("component {} does not exist", path.display());
        }
        return Ok(path);
    }
    let source = dir.join(
        spec.source
            .as_deref()
            .expect("validated: source or component"),
    );
    let language = spec.language.unwrap_or(if source.is_dir() {
        Language::Rust
    } else {
        Language::Js
    });
    match language {
        Language::Rust => build_rust(&source),
        Language::Js => build_js(dir, name, &source, options),
    }
}

fn build_rust(crate_dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is not a Rust crate (no Cargo.toml)",
            crate_dir.display()
        );
    }
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("cargo build failed (is the target installed? `rustup target add wasm32-wasip2`)");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| {
            msg["manifest_path"]
                .as_str()
                .and_then(|p| std::fs::canonicalize(p).ok())
                == std::fs::canonicalize(&manifest).ok()
        })
        .flat_map(|msg| {
            msg["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"));
    wasm.context("cargo built no .wasm (is the crate a `cdylib`?)")
}

fn build_js(
    app_dir: &Path,
    name: &str,
    source: &Path,
    options: BuildOptions,
) -> anyhow::Result<PathBuf> {
    if !source.is_file() {
        bail!("{} does not exist", source.display());
    }
    let sdk = js_sdk_dir();
    if !sdk
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        bail!(
            "the JS SDK's packages are not installed: run `npm ci` in {}",
            sdk.display()
        );
    }
    if let Some(package) = uninstalled_package(app_dir, source) {
        bail!(
            "{} has no node_modules: run `npm install` in {}",
            package.display(),
            package.parent().unwrap_or(Path::new(".")).display()
        );
    }
    let out_dir = app_dir.join(".kiln/build");
    std::fs::create_dir_all(&out_dir)?;
    let output = out_dir.join(format!("{name}.wasm"));
    eprintln!("building `{name}` from {}", source.display());
    let mut node = Command::new("node");
    node.arg(sdk.join("build.mjs"))
        .arg(source)
        .arg(&output)
        .arg("--root")
        .arg(app_dir);
    if !options.typecheck {
        node.arg("--no-typecheck");
    }
    let status = node
        .status()
        .context("cannot run node (JavaScript functions need Node.js 20+)")?;
    if !status.success() {
        bail!("building {} failed (the reason is above)", source.display());
    }
    Ok(output)
}

/// The nearest `package.json` between the function and the app folder, when
/// it has no `node_modules` beside it: its packages were never installed.
fn uninstalled_package(app_dir: &Path, source: &Path) -> Option<PathBuf> {
    let app_dir = std::fs::canonicalize(app_dir).ok()?;
    let mut dir = std::fs::canonicalize(source).ok()?.parent()?.to_path_buf();
    loop {
        let package = dir.join("package.json");
        if package.is_file() {
            return (!dir.join("node_modules").is_dir()).then_some(package);
        }
        if dir == app_dir || !dir.pop() {
            return None;
        }
    }
}
