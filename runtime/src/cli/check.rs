//! `kiln check`: reads an app's `kiln.toml` without deploying and prints
//! what would open its data to anyone: collections whose rules let
//! anonymous callers read or write, and filter rules that do not mention
//! the caller. `kiln deploy` runs the same check first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use kiln::capabilities::AppManifest;
use kiln::capabilities::collections::{manifest, warnings};
use kiln::server::manifest::Manifest;

#[derive(Args)]
pub struct CheckArgs {
    /// The app folder (with kiln.toml).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Fail (exit 1) when there is any warning.
    #[arg(long)]
    pub strict: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    check(&args.dir, args.strict)?;
    println!(
        "{}: no collection is open to anyone",
        args.dir.join("kiln.toml").display()
    );
    Ok(())
}

/// Prints the warnings of the app in `dir`; with `strict`, any is an error.
pub fn check(dir: &Path, strict: bool) -> anyhow::Result<()> {
    let path = dir.join("kiln.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let parsed = Manifest::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let functions: Arc<[Arc<str>]> = parsed.functions.keys().map(|n| n.as_str().into()).collect();
    let collections = manifest::parse(&AppManifest {
        app: parsed.name.as_deref().unwrap_or("app"),
        app_functions: &functions,
        app_section: &parsed.capabilities,
    })
    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let found = warnings::warnings(&collections);
    for warning in &found {
        eprintln!("warning: {}: {}", warning.field, warning.message);
    }
    if strict && !found.is_empty() {
        anyhow::bail!("{} warning(s), and --strict refuses any", found.len());
    }
    Ok(())
}
