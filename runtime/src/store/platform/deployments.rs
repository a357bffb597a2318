//! Every version of every app (`deployments`), and each app's live version
//! (`apps`). A node switches an app when the store names another version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{all, collection, from_document, to_document};
use crate::store::{Documents, Namespace, StoreError};

const DEPLOYMENTS: Namespace<'static> = collection("deployments");
const APPS: Namespace<'static> = collection("apps");

/// One version of an app as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub app: String,
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The manifest as deployed (TOML text).
    pub manifest: String,
    /// Function name to component digest.
    pub components: BTreeMap<String, String>,
}

/// The stored form: the record and its id.
#[derive(Serialize, Deserialize)]
struct StoredDeployment {
    #[serde(rename = "_id")]
    id: String,
    #[serde(flatten)]
    record: DeploymentRecord,
}

/// An app and its live version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveVersion {
    #[serde(rename = "_id")]
    pub app: String,
    pub live: u64,
}

fn record_id(app: &str, version: u64) -> String {
    format!("{app}:{version:010}")
}

/// Stores a new version; `Conflict` when another node stored it first.
pub async fn insert(documents: &Documents, record: &DeploymentRecord) -> Result<(), StoreError> {
    let stored = StoredDeployment {
        id: record_id(&record.app, record.version),
        record: record.clone(),
    };
    documents
        .insert(DEPLOYMENTS, vec![to_document(&stored)])
        .await
        .map(|_| ())
}

pub async fn get(
    documents: &Documents,
    app: &str,
    version: u64,
) -> Result<Option<DeploymentRecord>, StoreError> {
    documents
        .get(DEPLOYMENTS, &record_id(app, version))
        .await?
        .map(|doc| from_document::<StoredDeployment>("deployment", doc).map(|s| s.record))
        .transpose()
}

/// Every stored version of `app`, ascending.
pub async fn list(documents: &Documents, app: &str) -> Result<Vec<DeploymentRecord>, StoreError> {
    let mut records = all(documents, DEPLOYMENTS, &json!({ "app": app }))
        .await?
        .into_iter()
        .map(|doc| from_document::<StoredDeployment>("deployment", doc).map(|s| s.record))
        .collect::<Result<Vec<_>, _>>()?;
    records.sort_by_key(|r| r.version);
    Ok(records)
}

/// Records the live version of `app` (the switch is what makes it live).
pub async fn set_live(documents: &Documents, app: &str, version: u64) -> Result<(), StoreError> {
    documents
        .update(
            APPS,
            &json!({ "_id": app }),
            &json!({ "$set": { "live": version } }),
            true,
            false,
        )
        .await
        .map(|_| ())
}

/// Every app's live version; a record that does not read is skipped and logged.
pub async fn live_versions(documents: &Documents) -> Result<Vec<LiveVersion>, StoreError> {
    Ok(all(documents, APPS, &json!({}))
        .await?
        .into_iter()
        .filter_map(|doc| match from_document("live version", doc) {
            Ok(live) => Some(live),
            Err(err) => {
                tracing::error!("{err}");
                None
            }
        })
        .collect())
}
