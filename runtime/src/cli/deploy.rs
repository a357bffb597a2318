//! `kiln deploy`: build an app, upload its components (only those the
//! server lacks) and switch the app to the new version.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kiln::server::artifacts::digest_of;
use kiln::server::settings::{ADMIN_KEY_ENV, default_data_dir, read_stored_admin_key};
use serde_json::{Value, json};

use super::build::{BuiltApp, build_app};

#[derive(Args)]
pub struct DeployArgs {
    /// The app folder (with kiln.toml).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The server's address.
    #[arg(long, env = "KILN_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The admin key; when absent, the key a local `kiln serve` stored in its data directory.
    #[arg(long, env = ADMIN_KEY_ENV, hide_env_values = true)]
    admin_key: Option<String>,
    /// The data directory of a local server, to find its stored admin key.
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Deploy under this app name instead of the manifest's.
    #[arg(long)]
    app: Option<String>,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    let admin_key = match args.admin_key {
        Some(key) => key,
        None => {
            let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
            read_stored_admin_key(&data_dir).with_context(|| {
                format!(
                    "no admin key: pass --admin-key, set {ADMIN_KEY_ENV}, or run where `kiln serve` stored it ({})",
                    data_dir.display()
                )
            })?
        }
    };
    let built = build_app(&args.dir)?;
    let app = args.app.unwrap_or_else(|| built.name.clone());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let version = runtime.block_on(upload_and_deploy(&args.server, &admin_key, &app, &built))?;
    println!(
        "deployed {app} version {version}: {}/{app}/",
        args.server.trim_end_matches('/')
    );
    Ok(())
}

async fn upload_and_deploy(
    server: &str,
    key: &str,
    app: &str,
    built: &BuiltApp,
) -> anyhow::Result<u64> {
    let base = server.trim_end_matches('/');
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

/// The JSON body of a successful response, or the server's error message.
async fn expect_success(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or(text.as_str());
        bail!("server answered {status}: {message}");
    }
    Ok(body)
}
