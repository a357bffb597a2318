//! `kiln deploy`: build an app, upload its components (only those the
//! server lacks) and switch the app to the new version.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiln::server::artifacts::digest_of;
use serde_json::json;

use super::admin::{ServerArgs, expect_success};
use super::build::{BuildOptions, BuiltApp, build_app};

#[derive(Args)]
pub struct DeployArgs {
    /// The app folder (with kiln.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    #[command(flatten)]
    server: ServerArgs,
    /// Deploy under this app name instead of the manifest's.
    #[arg(long)]
    app: Option<String>,
    /// Skip type-checking TypeScript functions.
    #[arg(long)]
    no_typecheck: bool,
    /// Refuse to deploy when `kiln check` warns of an open collection.
    #[arg(long)]
    strict: bool,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    super::check::check(&args.dir, args.strict)?;
    let admin_key = args.server.admin_key()?;
    let options = BuildOptions {
        typecheck: !args.no_typecheck,
    };
    let built = build_app(&args.dir, options)?;
    let app = args.app.unwrap_or_else(|| built.name.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = args.server.base();
    let version = runtime.block_on(upload_and_deploy(base, &admin_key, &app, &built))?;
    println!("deployed {app} version {version}: {base}/{app}/");
    Ok(())
}

async fn upload_and_deploy(
    server: &str,
    key: &str,
    app: &str,
    built: &BuiltApp,
) -> anyhow::Result<u64> {
    let base = server;
    let client = reqwest::Client::new();
    let mut components = BTreeMap::new();
    for function in &built.functions {
        let bytes = std::fs::read(&function.path)
            .with_context(|| format!("cannot read {}", function.path.display()))?;
        let digest = digest_of(&bytes);
        let url = format!("{base}/admin/v1/components/{digest}");
        let head = client
            .head(&url)
            .bearer_auth(key)
            .send()
            .await
            .with_context(|| format!("cannot reach {base}"))?;
        if head.status() == reqwest::StatusCode::NOT_FOUND {
            let put = client.put(&url).bearer_auth(key).body(bytes).send().await?;
            expect_success(put).await?;
        } else {
            expect_success(head).await?;
        }
        components.insert(function.name.clone(), digest);
    }
    let response = client
        .post(format!("{base}/admin/v1/apps/{app}/deployments"))
        .bearer_auth(key)
        .json(&json!({ "manifest": built.manifest, "components": components }))
        .send()
        .await?;
    let body = expect_success(response).await?;
    body["version"]
        .as_u64()
        .context("the server's answer has no version")
}
