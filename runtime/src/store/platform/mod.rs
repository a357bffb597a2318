//! Kiln's own data, in the platform database beside the apps' data: one
//! module per kind of record, each declaring its collection, its serde type
//! and its operations. Every `_kiln` collection is declared here and nowhere
//! else.
//!
//! | collection | record | module |
//! | --- | --- | --- |
//! | `deployments` | one version of an app | [`deployments`] |
//! | `apps` | an app's live version | [`deployments`] |
//! | `jobs` | a one-off job | [`jobs`] |
//! | `cron_claims` | a claimed cron occurrence | [`cron`] |
//! | `cron_state` | a trigger's latest claimed occurrence | [`cron`] |
//! | `cron_locks` | who runs a trigger now | [`cron`] |
//! | `runs` | a run, attempt, skip or missed occurrence | [`runs`] |
//! | `users` | a user of an app | [`users`] |
//! | `sessions` | a signed-in session | [`sessions`] |
//! | `signing_keys` | an app's token signing key | [`signing_keys`] |
//! | `identities` | a provider identity linked to a user | [`identities`] |
//! | `oidc_states` | a code-flow sign-in awaiting its callback | [`identities`] |
//! | `files` | a stored file of an app | [`files`] |
//! | `file_usage` | files and bytes an app stores | [`files`] |
//! | `uploads` | a resumable upload in progress | [`uploads`] |

pub mod cron;
pub mod deployments;
pub mod files;
pub mod identities;
pub mod jobs;
pub mod pending_blobs;
pub mod runs;
pub mod sessions;
pub mod signing_keys;
pub mod uploads;
pub mod users;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Documents, FindOptions, Namespace, PLATFORM_DATABASE, StoreError};

const fn collection(name: &'static str) -> Namespace<'static> {
    Namespace {
        database: PLATFORM_DATABASE,
        collection: name,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_document<T: Serialize>(record: &T) -> Value {
    serde_json::to_value(record).expect("platform records serialize")
}

/// A stored record; one that does not read is `Unavailable` naming it,
/// never a panic.
fn from_document<T: DeserializeOwned>(what: &str, doc: Value) -> Result<T, StoreError> {
    let id = doc.get("_id").cloned();
    serde_json::from_value(doc).map_err(|e| {
        StoreError::Unavailable(format!("the stored {what} {id:?} does not read: {e}"))
    })
}

/// Every document of `ns` matching `filter`, read in pages.
async fn all(
    documents: &Documents,
    ns: Namespace<'_>,
    filter: &Value,
) -> Result<Vec<Value>, StoreError> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let options = FindOptions {
            batch_size: Some(500),
            cursor: cursor.take(),
            ..FindOptions::default()
        };
        let page = documents.find(ns, filter, options).await?;
        all.extend(page.documents);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(all),
        }
    }
}
