//! The run history: one record per run, attempt, skip or missed occurrence
//! of a cron trigger, in the platform database, where every node sees it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{collection, to_document};
use crate::store::{Documents, FindOptions, Namespace, StoreError};

const RUNS: Namespace<'static> = collection("runs");

/// Most bytes of a run's captured output kept in its record.
pub const LOG_LIMIT: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The previous run of the trigger was still running (`overlap = "skip"`).
    Skipped,
    /// No server ran when it was due.
    Missed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Skipped => "skipped",
            RunStatus::Missed => "missed",
        }
    }
}

/// One record of the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub app: String,
    pub trigger: String,
    pub function: String,
    /// When the occurrence was due (ms since the Unix epoch).
    pub scheduled_ms: u64,
    pub started_ms: Option<u64>,
    pub ended_ms: Option<u64>,
    pub status: RunStatus,
    /// 1 for the first attempt of an occurrence.
    pub attempt: u32,
    /// The node that ran (or recorded) it.
    pub node: String,
    /// Why it failed, or why it did not run.
    pub error: Option<String>,
    /// The function's stdout and stderr, cut at [`LOG_LIMIT`].
    #[serde(default)]
    pub logs: String,
    /// `true` for a run started from the admin API.
    #[serde(default)]
    pub manual: bool,
    /// `true` for a one-off job; `trigger` is then the job's id.
    #[serde(default)]
    pub job: bool,
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct RunFilter {
    pub trigger: Option<String>,
    pub status: Option<String>,
    pub limit: Option<u64>,
}

pub async fn create_index(documents: &Documents) -> Result<(), StoreError> {
    documents
        .create_index(RUNS, &json!({"app": 1, "scheduled_ms": -1}), false)
        .await
}

pub async fn save(documents: &Documents, run: &RunRecord) -> Result<(), StoreError> {
    documents
        .replace(RUNS, &json!({"_id": run.id}), to_document(run), true)
        .await
        .map(|_| ())
}

/// The newest records of `app` first.
pub async fn list(
    documents: &Documents,
    app: &str,
    filter: &RunFilter,
) -> Result<Vec<RunRecord>, StoreError> {
    let mut query = json!({"app": app});
    if let Some(trigger) = &filter.trigger {
        query["trigger"] = json!(trigger);
    }
    if let Some(status) = &filter.status {
        query["status"] = json!(status);
    }
    let page = documents
        .find(
            RUNS,
            &query,
            FindOptions {
                sort: Some(json!({"scheduled_ms": -1, "attempt": -1})),
                limit: Some(filter.limit.unwrap_or(100).min(1000)),
                ..FindOptions::default()
            },
        )
        .await?;
    Ok(page
        .documents
        .into_iter()
        .filter_map(|doc| match super::from_document("run record", doc) {
            Ok(run) => Some(run),
            Err(err) => {
                tracing::warn!("skipping a run record: {err}");
                None
            }
        })
        .collect())
}

/// Keeps the last `LOG_LIMIT` bytes at most, on a character boundary.
pub fn bounded_logs(stdout: &str, stderr: &str) -> String {
    let mut logs = String::new();
    for (name, text) in [("stdout", stdout), ("stderr", stderr)] {
        if !text.is_empty() {
            logs.push_str(&format!("[{name}]\n{text}"));
            if !text.ends_with('\n') {
                logs.push('\n');
            }
        }
    }
    if logs.len() > LOG_LIMIT {
        let mut cut = LOG_LIMIT;
        while !logs.is_char_boundary(cut) {
            cut -= 1;
        }
        logs.truncate(cut);
        logs.push_str("\n[cut at 16 KiB]\n");
    }
    logs
}
