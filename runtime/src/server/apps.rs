//! Apps and their deployments: validate, compile, store, switch atomically.
//!
//! Components are stored content-addressed in the artifact store. Every
//! version is a record in the platform database's `deployments` collection
//! (manifest text and the digest of each function's component); the `apps`
//! collection names each app's live version. Requests hold an `Arc` of the
//! version they started on, so a switch never disturbs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};
use wasmtime::component::types::ComponentItem;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::artifacts::{ArtifactError, Artifacts, is_valid_digest};
use super::manifest::{Manifest, ManifestError, app_name_rule, is_valid_app_name};
use super::settings::ServerLimits;
use crate::capabilities::Services;
use crate::engine::function::{
    Function, HTTP_EXPORT, LoadedComponent, SCHEDULED_EXPORT, SCHEDULED_RUN,
};
use crate::engine::lazy::Lazy;
use crate::engine::outbound::OutboundEntry;
use crate::engine::quota::AppQuota;
use crate::engine::{Engine, EngineError};
use crate::store::{FindOptions, Namespace, PLATFORM_DATABASE, StoreError};
use crate::triggers::cron::{CronApp, CronTrigger, Schedule};
use crate::triggers::http::{HttpApp, Route, RouteError, Router};

/// Why a deploy or rollback failed. Everything but `Storage`, `Platform` and `Internal`
/// is the caller's mistake (400/404), and none of them changes anything.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid app name `{0}`: {rule}", rule = app_name_rule())]
    InvalidAppName(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("components: {0}")]
    Components(String),
    #[error("function `{function}`: {error}")]
    Component {
        function: String,
        error: EngineError,
    },
    #[error("function `{function}` does not export `{export}` ({why})")]
    MissingExport {
        function: String,
        export: &'static str,
        why: &'static str,
    },
    #[error("routes: {0}")]
    Routes(#[from] RouteError),
    #[error("app `{0}` does not exist")]
    UnknownApp(String),
    #[error("app `{app}` has no version {version}")]
    UnknownVersion { app: String, version: u64 },
    #[error(transparent)]
    Storage(#[from] ArtifactError),
    #[error("platform data: {0}")]
    Platform(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

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

const DEPLOYMENTS: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "deployments",
};
const APPS: Namespace<'static> = Namespace {
    database: PLATFORM_DATABASE,
    collection: "apps",
};

/// A deployed version, serving.
pub struct LiveApp {
    pub version: u64,
    pub http: HttpApp,
    pub cron: Arc<CronApp>,
}

/// Every app of the server and its live version.
pub struct Apps {
    engine: Arc<Engine>,
    artifacts: Artifacts,
    services: Services,
    live: RwLock<HashMap<String, Arc<LiveApp>>>,
    /// One deploy or rollback at a time: version numbers and the switch stay simple.
    deploying: Mutex<()>,
    /// Live versions that failed to load, so a refresh does not retry them.
    unloadable: Mutex<HashMap<String, u64>>,
    /// Each app's share of the server, kept across its versions.
    quotas: std::sync::Mutex<HashMap<String, Arc<AppQuota>>>,
    limits: ServerLimits,
}

impl Apps {
    pub fn new(
        engine: Arc<Engine>,
        artifacts: Artifacts,
        services: Services,
        limits: ServerLimits,
    ) -> Self {
        Apps {
            engine,
            artifacts,
            services,
            live: RwLock::new(HashMap::new()),
            deploying: Mutex::new(()),
            unloadable: Mutex::new(HashMap::new()),
            quotas: std::sync::Mutex::new(HashMap::new()),
            limits,
        }
    }

    /// `app`'s share of the server (the same object for all its versions).
    fn quota(&self, app: &str) -> Arc<AppQuota> {
        self.quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(app.to_string())
            .or_insert_with(|| {
                Arc::new(AppQuota::new(
                    self.limits.app_max_instances,
                    self.limits.app_log_bytes_per_minute,
                ))
            })
            .clone()
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    /// The live version of `app`.
    pub fn get(&self, app: &str) -> Option<Arc<LiveApp>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// The cron side of every live version.
    pub fn cron_apps(&self) -> Vec<Arc<CronApp>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|live| live.cron.clone())
            .collect()
    }

    /// Every app and its live version, sorted by name.
    pub fn list(&self) -> Vec<(String, u64)> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let mut apps: Vec<_> = live.iter().map(|(k, v)| (k.clone(), v.version)).collect();
        apps.sort();
        apps
    }

    /// Brings every app to the live version the store names: at start-up,
    /// and then every second, for deploys and rollbacks made through other
    /// nodes sharing the store. Each function's component loads on its first
    /// request. A version whose record no longer reads is logged once and
    /// skipped, so one bad app cannot keep the server down.
    pub async fn refresh(&self) -> Result<(), DeployError> {
        for app in self.all_documents(APPS, &json!({})).await? {
            let (Some(name), Some(version)) = (app["_id"].as_str(), app["live"].as_u64()) else {
                continue;
            };
            let current = |apps: &Self| apps.get(name).is_some_and(|live| live.version == version);
            if current(self) || self.unloadable.lock().await.get(name) == Some(&version) {
                continue;
            }
            // A local deploy of this app may be switching right now.
            let _guard = self.deploying.lock().await;
            if current(self) {
                continue;
            }
            match self.load_version(name, version).await {
                Ok(live) => {
                    self.switch(name, live);
                    tracing::info!(
                        app = name,
                        version,
                        "switched to the version the store names"
                    );
                }
                Err(err) => {
                    tracing::error!(app = name, version, "cannot load the live version: {err}");
                    self.unloadable
                        .lock()
                        .await
                        .insert(name.to_string(), version);
                }
            }
        }
        Ok(())
    }

    /// Every document matching `filter`, read in pages.
    async fn all_documents(
        &self,
        ns: Namespace<'_>,
        filter: &Value,
    ) -> Result<Vec<Value>, DeployError> {
        let documents = &self.services.documents;
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

    /// Records the live version of `app` (the switch is what makes it live).
    async fn set_live(&self, app: &str, version: u64) -> Result<(), DeployError> {
        self.services
            .documents
            .update(
                APPS,
                &json!({ "_id": app }),
                &json!({ "$set": { "live": version } }),
                true,
                false,
            )
            .await?;
        Ok(())
    }

    /// Validates, compiles and switches `app` to a new version made of
    /// `manifest` and the already uploaded components.
    pub async fn deploy(
        &self,
        app: &str,
        manifest_text: String,
        components: BTreeMap<String, String>,
    ) -> Result<DeploymentRecord, DeployError> {
        if !is_valid_app_name(app) {
            return Err(DeployError::InvalidAppName(app.to_string()));
        }
        let manifest = Manifest::parse(&manifest_text)?;
        if let Some(name) = manifest.name.as_deref().filter(|n| *n != app) {
            return Err(DeployError::Manifest(ManifestError(format!(
                "name: the manifest names app `{name}` but is deployed as `{app}`"
            ))));
        }
        check_components(&manifest, &components)?;
        let _guard = self.deploying.lock().await;
        let version = self.records(app).await?.last().map_or(0, |r| r.version) + 1;
        let record = DeploymentRecord {
            app: app.to_string(),
            version,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            manifest: manifest_text,
            components,
        };
        self.validate(&record, &manifest).await?;
        let live = self.assemble(&record, &manifest)?;
        let mut stored = serde_json::to_value(&record).expect("records serialize");
        stored["_id"] = json!(record_id(app, version));
        self.services
            .documents
            .insert(DEPLOYMENTS, vec![stored])
            .await?;
        self.set_live(app, version).await?;
        self.switch(app, live);
        tracing::info!(app, version, "deployed");
        Ok(record)
    }

    /// Switches `app` back (or forward) to a stored version.
    pub async fn rollback(&self, app: &str, version: u64) -> Result<DeploymentRecord, DeployError> {
        let _guard = self.deploying.lock().await;
        let record = self.record(app, version).await?;
        let live = self.load_record(&record).await?;
        self.set_live(app, version).await?;
        self.switch(app, live);
        tracing::info!(app, version, "rolled back");
        Ok(record)
    }

    /// Every stored version of `app`, ascending.
    pub async fn records(&self, app: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        let mut records = self
            .all_documents(DEPLOYMENTS, &json!({ "app": app }))
            .await?
            .into_iter()
            .map(from_document)
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by_key(|r| r.version);
        Ok(records)
    }

    pub async fn record(&self, app: &str, version: u64) -> Result<DeploymentRecord, DeployError> {
        let unknown = || DeployError::UnknownVersion {
            app: app.to_string(),
            version,
        };
        let doc = self
            .services
            .documents
            .get(DEPLOYMENTS, &record_id(app, version))
            .await?
            .ok_or_else(unknown)?;
        from_document(doc)
    }

    async fn load_version(&self, app: &str, version: u64) -> Result<LiveApp, DeployError> {
        let record = self.record(app, version).await?;
        self.load_record(&record).await
    }

    async fn load_record(&self, record: &DeploymentRecord) -> Result<LiveApp, DeployError> {
        let manifest = Manifest::parse(&record.manifest)?;
        self.assemble(record, &manifest)
    }

    fn switch(&self, app: &str, live: LiveApp) {
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(app.to_string(), Arc::new(live));
    }

    /// Compiles every function and checks its imports and exports, so a
    /// deploy that would not serve is refused. The compiled artifacts stay in
    /// the compile cache; nothing is kept loaded.
    async fn validate(
        &self,
        record: &DeploymentRecord,
        manifest: &Manifest,
    ) -> Result<(), DeployError> {
        for name in manifest.functions.keys() {
            let loaded = load_component(
                &self.engine,
                &self.artifacts,
                name,
                &record.components[name],
            )
            .await?;
            let routed = manifest.routes.iter().any(|r| r.function == *name);
            let scheduled = manifest.crons.iter().any(|c| c.function == *name);
            let missing = |export, why| DeployError::MissingExport {
                function: name.clone(),
                export,
                why,
            };
            if routed && loaded.http.is_none() {
                return Err(missing(HTTP_EXPORT, "a route calls it"));
            }
            if scheduled && loaded.scheduled.is_none() {
                return Err(missing(SCHEDULED_EXPORT, "a cron trigger calls it"));
            }
            if loaded.http.is_none() && loaded.scheduled.is_none() {
                return Err(missing(
                    HTTP_EXPORT,
                    "a function exports an HTTP handler, a scheduled handler, or both",
                ));
            }
        }
        Ok(())
    }

    /// The router and the functions of a version; each function's component
    /// is loaded by its first request.
    fn assemble(
        &self,
        record: &DeploymentRecord,
        manifest: &Manifest,
    ) -> Result<LiveApp, DeployError> {
        let names: Vec<&String> = manifest.functions.keys().collect();
        let routes =
            manifest
                .routes
                .iter()
                .map(|r| {
                    Ok(Route {
                        path: r.path.clone(),
                        methods: r
                            .methods
                            .iter()
                            .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                            .collect(),
                        function: names.iter().position(|n| **n == r.function).ok_or_else(
                            || ManifestError(format!("routes: no function `{}`", r.function)),
                        )?,
                    })
                })
                .collect::<Result<Vec<_>, DeployError>>()?;
        let router = Router::new(&routes)?;
        let app_quota = self.quota(&record.app);
        let functions = manifest
            .functions
            .iter()
            .map(|(name, spec)| {
                let (engine, artifacts) = (self.engine.clone(), self.artifacts.clone());
                // A record read back from the store may be corrupt: refuse it, never panic.
                let digest = record.components.get(name).cloned().ok_or_else(|| {
                    DeployError::Components(format!("no component for function `{name}`"))
                })?;
                let name_ = name.clone();
                let component = Lazy::new(move || {
                    let (engine, artifacts) = (engine.clone(), artifacts.clone());
                    let (name, digest) = (name_.clone(), digest.clone());
                    Box::pin(async move {
                        load_component(&engine, &artifacts, &name, &digest)
                            .await
                            .map_err(|e| e.to_string())
                    })
                });
                Ok(Arc::new(Function {
                    name: name.as_str().into(),
                    component,
                    limits: spec.limits,
                    variables: manifest.variables_of(spec).into(),
                    allowed_outbound_hosts: spec
                        .allowed_outbound_hosts
                        .iter()
                        .map(|h| OutboundEntry::parse(h).map_err(ManifestError))
                        .collect::<Result<Vec<_>, _>>()?
                        .into(),
                    concurrency: Arc::new(Semaphore::new(spec.limits.max_concurrency as usize)),
                    app_quota: app_quota.clone(),
                }))
            })
            .collect::<Result<Vec<_>, DeployError>>()?;
        let triggers = manifest
            .crons
            .iter()
            .map(|cron| {
                let function = names
                    .iter()
                    .position(|n| **n == cron.function)
                    .map(|i| functions[i].clone())
                    .ok_or_else(|| {
                        ManifestError(format!("crons: no function `{}`", cron.function))
                    })?;
                let schedule = Schedule::parse(&cron.schedule, cron.timezone.as_deref())
                    .map_err(|e| ManifestError(format!("crons (`{}`): {e}", cron.name)))?;
                let payload = serde_json::to_string(&cron.payload)
                    .map_err(|e| ManifestError(format!("crons (`{}`).payload: {e}", cron.name)))?;
                Ok(Arc::new(CronTrigger {
                    name: cron.name.clone(),
                    expression: cron.schedule.clone(),
                    timezone: cron.timezone.clone(),
                    schedule,
                    function,
                    payload,
                    overlap: cron.overlap,
                    missed: cron.missed,
                    retries: cron.retries,
                    retry_backoff: cron.retry_backoff,
                }))
            })
            .collect::<Result<Vec<_>, ManifestError>>()?;
        let app: Arc<str> = record.app.as_str().into();
        let function_names: Arc<[Arc<str>]> = functions.iter().map(|f| f.name.clone()).collect();
        Ok(LiveApp {
            version: record.version,
            http: HttpApp {
                app: app.clone(),
                services: self.services.clone(),
                router,
                functions: functions.clone(),
                function_names: function_names.clone(),
            },
            cron: Arc::new(CronApp {
                app,
                services: self.services.clone(),
                triggers,
                functions,
                function_names,
            }),
        })
    }
}

/// Loads a function's component (from the compile cache, or compiling the
/// uploaded bytes), links it, and resolves the entry points it exports.
async fn load_component(
    engine: &Arc<Engine>,
    artifacts: &Artifacts,
    name: &str,
    digest: &str,
) -> Result<LoadedComponent, DeployError> {
    let failed = |error| DeployError::Component {
        function: name.to_string(),
        error,
    };
    let cached = {
        let (engine, digest) = (engine.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || engine.load_cached(&digest))
            .await
            .map_err(|e| DeployError::Internal(e.to_string()))?
    };
    let component = match cached {
        Some(component) => component,
        None => {
            let bytes = artifacts.get_component(digest).await?.ok_or_else(|| {
                DeployError::Components(format!(
                    "component {digest} of function `{name}` was not uploaded"
                ))
            })?;
            let (engine, digest) = (engine.clone(), digest.to_string());
            tokio::task::spawn_blocking(move || engine.compile(&digest, &bytes))
                .await
                .map_err(|e| DeployError::Internal(e.to_string()))?
                .map_err(failed)?
        }
    };
    let pre = engine.instantiate_pre(&component).map_err(failed)?;
    let exports_http =
        component
            .component_type()
            .exports(engine.wasmtime())
            .any(|(export, item)| {
                export.starts_with(HTTP_EXPORT)
                    && matches!(item.ty, ComponentItem::ComponentInstance(_))
            });
    let http = match exports_http {
        true => Some(ProxyPre::new(pre.clone()).map_err(|err| failed(EngineError::Link(err)))?),
        false => None,
    };
    let scheduled = component
        .get_export_index(None, SCHEDULED_EXPORT)
        .and_then(|instance| component.get_export_index(Some(&instance), SCHEDULED_RUN));
    Ok(LoadedComponent {
        pre,
        http,
        scheduled,
    })
}

fn check_components(
    manifest: &Manifest,
    components: &BTreeMap<String, String>,
) -> Result<(), DeployError> {
    for name in manifest.functions.keys() {
        match components.get(name) {
            None => {
                return Err(DeployError::Components(format!(
                    "no component given for function `{name}`"
                )));
            }
            Some(digest) if !is_valid_digest(digest) => {
                return Err(DeployError::Components(format!(
                    "`{digest}` (function `{name}`) is not a sha256:<64 hex> digest"
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = components
        .keys()
        .find(|k| !manifest.functions.contains_key(*k))
    {
        return Err(DeployError::Components(format!(
            "component given for `{extra}`, which the manifest does not declare"
        )));
    }
    Ok(())
}

/// A deployment record as stored (its `_id` aside).
fn from_document(mut doc: Value) -> Result<DeploymentRecord, DeployError> {
    let id = doc.as_object_mut().and_then(|map| map.remove("_id"));
    serde_json::from_value(doc)
        .map_err(|e| DeployError::Internal(format!("stored deployment {id:?}: {e}")))
}

fn record_id(app: &str, version: u64) -> String {
    format!("{app}:{version:010}")
}
