//! What the commands that talk to a running server share: its address, the
//! admin key (or where a local server stored it), and reading its answers.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use kiln::server::settings::{ADMIN_KEY_ENV, default_data_dir, read_stored_admin_key};
use serde_json::Value;

#[derive(Args)]
pub struct ServerArgs {
    /// The server's address.
    #[arg(long, env = "KILN_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin key; when absent, the key a local `kiln serve` stored in its data directory.
    #[arg(long, env = ADMIN_KEY_ENV, hide_env_values = true)]
    admin_key: Option<String>,
    /// The data directory of a local server, to find its stored admin key.
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ServerArgs {
    pub fn base(&self) -> &str {
        self.server.trim_end_matches('/')
    }

    pub fn admin_key(&self) -> anyhow::Result<String> {
        if let Some(key) = &self.admin_key {
            return Ok(key.clone());
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        read_stored_admin_key(&data_dir).with_context(|| {
            format!(
                "no admin key: pass --admin-key, set {ADMIN_KEY_ENV}, or run where `kiln serve` stored it ({})",
                data_dir.display()
            )
        })
    }

    /// GETs an admin API path and returns its JSON.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None)
    }

    /// Calls an admin API path, with a JSON body if given, and returns its JSON.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let key = self.admin_key()?;
        let url = format!("{}{path}", self.base());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let mut request = reqwest::Client::new()
                .request(method, &url)
                .bearer_auth(key);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request
                .send()
                .await
                .with_context(|| format!("cannot reach {}", self.base()))?;
            expect_success(response).await
        })
    }
}

/// The JSON body of a successful response, or the server's error message.
pub async fn expect_success(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or(text.as_str());
        bail!("server answered {status}: {message}");
    }
    Ok(body)
}

/// A JSON string, or `?`.
pub fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("?")
}

/// Milliseconds since the epoch as an RFC 3339 time, or `?`.
pub fn millis(value: &Value) -> String {
    value
        .as_i64()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "?".into(),
            |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
}
