//! `kiln build`: Rust functions with cargo for wasm32-wasip2, JavaScript
//! functions with componentize-js (through the JS SDK's build script).

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

/// Reads `dir/kiln.toml` and builds every function.
pub fn build_app(dir: &Path) -> anyhow::Result<BuiltApp> {
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
        let path = build_function(dir, fn_name, spec)
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

fn build_function(dir: &Path, name: &str, spec: &FunctionSpec) -> anyhow::Result<PathBuf> {
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
        Language::Js => build_js(dir, name, &source),
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

fn build_js(app_dir: &Path, name: &str, source: &Path) -> anyhow::Result<PathBuf> {
    if !source.is_file() {
        bail!("{} does not exist", source.display());
    }
    let out_dir = app_dir.join(".kiln/build");
    std::fs::create_dir_all(&out_dir)?;
    let output = out_dir.join(format!("{name}.wasm"));
    let sdk = js_sdk_dir();
    let inputs = [
        source.parent().unwrap_or(Path::new(".")).to_path_buf(),
        sdk.join("../../wit"),
        sdk.clone(),
    ];
    if is_newer_than(&output, &inputs) {
        return Ok(output);
    }
    let script = sdk.join("build.mjs");
    if !sdk
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        bail!(
            "the JS SDK's packages are not installed: run `npm ci` in {}",
            sdk.display()
        );
    }
    let status = Command::new("node")
        .arg(&script)
        .arg(source)
        .arg(&output)
        .status()
        .context("cannot run node (JavaScript functions need Node.js 20+)")?;
    if !status.success() {
        bail!("componentize-js failed for {}", source.display());
    }
    Ok(output)
}

/// Whether `output` exists and is newer than every file directly in the
/// `inputs` folders (the function's folder, the WIT, the JS SDK):
/// componentize-js takes ~10 s, so an unchanged function is not rebuilt.
fn is_newer_than(output: &Path, inputs: &[PathBuf]) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return false;
    };
    inputs.iter().all(|folder| {
        std::fs::read_dir(folder).is_ok_and(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .all(|modified| modified < built)
        })
    })
}
