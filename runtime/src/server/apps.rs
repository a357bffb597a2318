//! Apps and their deployments: validate, compile, store, switch atomically.
//!
//! Components are stored content-addressed in the artifact store; every
//! version and each app's live version are platform records
//! ([`crate::store::platform::deployments`]). Requests hold an `Arc` of the
//! version they started on, so a switch never disturbs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;

use super::artifacts::{ArtifactError, Artifacts, is_valid_digest};
use super::manifest::{Manifest, ManifestError, app_name_rule, is_valid_app_name};
use super::settings::ServerLimits;
use crate::capabilities::auth::Accounts;
use crate::capabilities::storage::Files;
use crate::capabilities::{AppConfigured, AppManifest, FunctionManifest};
use crate::invocation::{App, AppQuota, Function, Invoker, LoadError};
use crate::store::platform::deployments::{self, DeploymentRecord};
use crate::store::{Documents, StoreError};
use crate::triggers::cron::{CronTrigger, LiveCrons, SCHEDULED_EXPORT, ScheduledEntry};
use crate::triggers::http::{
    HTTP_EXPORT, HttpEntry, HttpRoutes, Route, RouteError, RouteTarget, Router,
};

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
    Component { function: String, error: LoadError },
    #[error("function `{function}` does not export `{export}` ({why})")]
    MissingExport {
        function: String,
        export: &'static str,
        why: String,
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
}

/// A deployed version, serving: the app and what each trigger needs of it.
pub struct LiveApp {
    pub app: Arc<App>,
    pub http: HttpRoutes,
    /// Each capability's state of the app: what its clients reach.
    pub capabilities: AppConfigured,
    pub crons: Arc<[Arc<CronTrigger>]>,
}

/// Every app of the server and its live version.
pub struct Apps {
    invoker: Arc<Invoker>,
    accounts: Arc<Accounts>,
    files: Files,
    artifacts: Artifacts,
    documents: Documents,
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
        invoker: Arc<Invoker>,
        accounts: Arc<Accounts>,
        files: Files,
        artifacts: Artifacts,
        documents: Documents,
        limits: ServerLimits,
    ) -> Self {
        Apps {
            invoker,
            accounts,
            files,
            artifacts,
            documents,
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
                    app.into(),
                    self.limits.app_max_instances,
                    self.limits.app_guest_cores,
                    self.limits.app_log_bytes_per_minute,
                ))
            })
            .clone()
    }

    pub fn artifacts(&self) -> &Artifacts {
        &self.artifacts
    }

    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    pub fn files(&self) -> &Files {
        &self.files
    }

    pub fn documents(&self) -> &Documents {
        &self.documents
    }

    /// The live version of `app`.
    pub fn get(&self, app: &str) -> Option<Arc<LiveApp>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(app)
            .cloned()
    }

    /// The cron side of every live version (apps without triggers too:
    /// their one-off jobs run).
    pub fn live_crons(&self) -> Vec<LiveCrons> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|live| LiveCrons {
                app: live.app.clone(),
                triggers: live.crons.clone(),
            })
            .collect()
    }

    /// Every app and its live version, sorted by name.
    pub fn list(&self) -> Vec<(String, u64)> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let mut apps: Vec<_> = live
            .iter()
            .map(|(k, v)| (k.clone(), v.app.version))
            .collect();
        apps.sort();
        apps
    }

    /// Brings every app to the live version the store names: at start-up,
    /// and then every second, for deploys and rollbacks made through other
    /// nodes sharing the store. Each function's component loads on its first
    /// request. A version whose record no longer reads is logged once and
    /// skipped, so one bad app cannot keep the server down.
    pub async fn refresh(&self) -> Result<(), DeployError> {
        for live in deployments::live_versions(&self.documents).await? {
            let (name, version) = (live.app.as_str(), live.live);
            let current = |apps: &Self| {
                apps.get(name)
                    .is_some_and(|live| live.app.version == version)
            };
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
        let version = deployments::list(&self.documents, app)
            .await?
            .last()
            .map_or(0, |r| r.version)
            + 1;
        let record = DeploymentRecord {
            app: app.to_string(),
            version,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            manifest: manifest_text,
            components,
        };
        // Everything the manifest says is checked before anything compiles.
        let live = self.assemble(&record, &manifest)?;
        self.validate(&record, &manifest, &live).await?;
        deployments::insert(&self.documents, &record).await?;
        deployments::set_live(&self.documents, app, version).await?;
        self.switch(app, live);
        tracing::info!(app, version, "deployed");
        Ok(record)
    }

    /// Switches `app` back (or forward) to a stored version.
    pub async fn rollback(&self, app: &str, version: u64) -> Result<DeploymentRecord, DeployError> {
        let _guard = self.deploying.lock().await;
        let record = self.record(app, version).await?;
        let live = self.load_record(&record)?;
        deployments::set_live(&self.documents, app, version).await?;
        self.switch(app, live);
        tracing::info!(app, version, "rolled back");
        Ok(record)
    }

    /// Every stored version of `app`, ascending.
    pub async fn records(&self, app: &str) -> Result<Vec<DeploymentRecord>, DeployError> {
        Ok(deployments::list(&self.documents, app).await?)
    }

    pub async fn record(&self, app: &str, version: u64) -> Result<DeploymentRecord, DeployError> {
        deployments::get(&self.documents, app, version)
            .await?
            .ok_or_else(|| DeployError::UnknownVersion {
                app: app.to_string(),
                version,
            })
    }

    async fn load_version(&self, app: &str, version: u64) -> Result<LiveApp, DeployError> {
        let record = self.record(app, version).await?;
        self.load_record(&record)
    }

    fn load_record(&self, record: &DeploymentRecord) -> Result<LiveApp, DeployError> {
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
        live: &LiveApp,
    ) -> Result<(), DeployError> {
        let mail = live.capabilities.auth.settings.mail.as_ref();
        let asks = live.capabilities.asks();
        let mail_function = mail.and_then(|m| m.function.as_deref());
        for name in manifest.functions.keys() {
            let tiered = self
                .invoker
                .load(&record.components[name])
                .await
                .map_err(|error| match error {
                    LoadError::NotUploaded(digest) => DeployError::Components(format!(
                        "component {digest} of function `{name}` was not uploaded"
                    )),
                    error => DeployError::Component {
                        function: name.clone(),
                        error,
                    },
                })?;
            let loaded = tiered.current();
            let (http, scheduled) = (
                loaded.exports::<HttpEntry>(),
                loaded.exports::<ScheduledEntry>(),
            );
            let routed = manifest.routes.iter().any(|r| r.function == *name);
            let cron = manifest.crons.iter().any(|c| c.function == *name);
            let mailer = mail_function == Some(name.as_str());
            let asked = asks.iter().find(|asked| asked.function == *name);
            let missing = |export, why: &str| DeployError::MissingExport {
                function: name.clone(),
                export,
                why: why.to_string(),
            };
            if routed && !http {
                return Err(missing(HTTP_EXPORT, "a route calls it"));
            }
            if let Some(asked) = asked.filter(|_| !http) {
                return Err(DeployError::MissingExport {
                    function: name.clone(),
                    export: HTTP_EXPORT,
                    why: format!("{} asks it: {}", asked.asker, asked.field),
                });
            }
            if cron && !scheduled {
                return Err(missing(SCHEDULED_EXPORT, "a cron trigger calls it"));
            }
            if mailer && !scheduled {
                return Err(missing(SCHEDULED_EXPORT, "auth.mail sends mail through it"));
            }
            if !http && !scheduled {
                return Err(missing(
                    HTTP_EXPORT,
                    "a function exports an HTTP handler, a scheduled handler, or both",
                ));
            }
        }
        Ok(())
    }

    /// Builds a version from its manifest: each function configured by every
    /// capability, the routes and the cron triggers. Each function's
    /// component is loaded by its first invocation.
    fn assemble(
        &self,
        record: &DeploymentRecord,
        manifest: &Manifest,
    ) -> Result<LiveApp, DeployError> {
        let app_name: Arc<str> = record.app.as_str().into();
        let names: Arc<[Arc<str>]> = manifest
            .functions
            .keys()
            .map(|n| n.as_str().into())
            .collect();
        let quota = self.quota(&record.app);
        let capabilities = self.invoker.capabilities();
        let app_state = capabilities
            .configure_app(&AppManifest {
                app: &record.app,
                app_functions: &names,
                app_section: &manifest.capabilities,
            })
            .map_err(|e| ManifestError(e.to_string()))?;
        let mut functions = Vec::new();
        let mut body_limits = Vec::new();
        for ((name, spec), arc_name) in manifest.functions.iter().zip(names.iter()) {
            // A record read back from the store may be corrupt: refuse it, never panic.
            let digest = record.components.get(name).cloned().ok_or_else(|| {
                DeployError::Components(format!("no component for function `{name}`"))
            })?;
            let configured = capabilities
                .configure(
                    &app_state,
                    &FunctionManifest {
                        app: &record.app,
                        function: name,
                        app_functions: &names,
                        app_section: &manifest.capabilities,
                        function_section: &spec.capabilities,
                    },
                )
                .map_err(|e| ManifestError(e.to_string()))?;
            functions.push(Arc::new(Function::new(
                &self.invoker,
                app_name.clone(),
                arc_name.clone(),
                digest,
                spec.limits.invocation(),
                configured,
                quota.clone(),
            )));
            body_limits.push(spec.limits.body());
        }
        let index_of = |function: &str, field: String| {
            manifest
                .functions
                .keys()
                .position(|n| n == function)
                .ok_or_else(|| ManifestError(format!("{field}: no function `{function}`")))
        };
        let mut routes = Vec::with_capacity(manifest.routes.len());
        let mut targets = Vec::with_capacity(manifest.routes.len());
        for (i, r) in manifest.routes.iter().enumerate() {
            routes.push(Route {
                path: r.path.clone(),
                methods: r
                    .methods
                    .iter()
                    .filter_map(|m| http::Method::from_bytes(m.as_bytes()).ok())
                    .collect(),
                target: i,
            });
            targets.push(RouteTarget {
                function: index_of(&r.function, format!("routes[{i}].function"))?,
                policy: r
                    .policy()
                    .map_err(|e| ManifestError(format!("routes[{i}].auth: {e}")))?,
            });
        }
        let router = Router::new(&routes)?;
        let crons = manifest
            .crons
            .iter()
            .enumerate()
            .map(|(i, cron)| {
                let field = format!("crons[{i}]");
                let function =
                    functions[index_of(&cron.function, format!("{field}.function"))?].clone();
                CronTrigger::new(cron, &field, function)
                    .map(Arc::new)
                    .map_err(ManifestError)
            })
            .collect::<Result<Arc<[_]>, ManifestError>>()?;
        Ok(LiveApp {
            app: Arc::new(App {
                name: app_name,
                version: record.version,
                functions,
            }),
            http: HttpRoutes {
                router,
                targets,
                auth: app_state.auth.clone(),
                body_limits,
            },
            capabilities: app_state,
            crons,
        })
    }
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
