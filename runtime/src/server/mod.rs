//! The server: composes the engine, the capabilities and the triggers,
//! hosts the apps, serves the admin API, and shuts down gracefully.

pub mod admin;
pub mod apps;
pub mod artifacts;
pub mod manifest;
pub mod settings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::apps::{Apps, DeployError};
use self::artifacts::Artifacts;
use self::settings::{Settings, SettingsError, stored_admin_key};
use crate::capabilities::Services;
use crate::engine::{Engine, EngineError, EngineSettings};
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DocumentStore, Documents, StoreLimits};
use crate::triggers::cron::Scheduler;
use crate::triggers::http::{ResponseBody, error_response};

/// How long in-flight requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("artifact store: {0}")]
    Store(#[from] object_store::Error),
    #[error("document store: {0}")]
    Documents(#[from] crate::store::StoreError),
    #[error("loading deployed apps: {0}")]
    Load(#[from] DeployError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Where the admin key came from, for the start-up message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminKeySource {
    Configured,
    Stored(std::path::PathBuf),
    Generated(std::path::PathBuf),
}

/// A server that is serving.
pub struct RunningServer {
    pub addr: SocketAddr,
    pub apps: Arc<Apps>,
    pub admin_key_source: AdminKeySource,
    shutdown: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    scheduling: tokio::task::JoinHandle<()>,
    refreshing: tokio::task::JoinHandle<()>,
}

struct Shared {
    engine: Arc<Engine>,
    apps: Arc<Apps>,
    scheduler: Arc<Scheduler>,
    admin_key: String,
}

/// Opens the data directory, loads the deployed apps and starts listening.
pub async fn start(settings: Settings) -> Result<RunningServer, ServerError> {
    let data_dir = &settings.data_dir;
    let objects_dir = data_dir.join("objects");
    std::fs::create_dir_all(&objects_dir).map_err(|source| ServerError::DataDir {
        path: objects_dir.clone(),
        source,
    })?;
    let (admin_key, admin_key_source) = match settings.admin_key.clone() {
        Some(key) => (key, AdminKeySource::Configured),
        None => {
            let path = data_dir.join(settings::ADMIN_KEY_FILE);
            let (key, generated) = stored_admin_key(data_dir)?;
            let source = if generated {
                AdminKeySource::Generated(path)
            } else {
                AdminKeySource::Stored(path)
            };
            (key, source)
        }
    };
    let engine = Engine::new(
        &EngineSettings {
            cache_dir: settings
                .cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("cache")),
            max_instances: settings.max_instances,
        },
        crate::capabilities::add_to_linker,
    )?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&objects_dir)?;
    let services = Services {
        documents: open_documents(&settings).await?,
    };
    let documents = services.documents.clone();
    let apps = Arc::new(Apps::new(
        engine.clone(),
        Artifacts::new(Arc::new(store)),
        services,
    ));
    apps.refresh().await?;
    let refreshing = tokio::spawn(refresh_apps(apps.clone()));
    let cron_source = {
        let apps = apps.clone();
        Arc::new(move || apps.cron_apps())
    };
    let scheduler = Scheduler::new(engine.clone(), documents, cron_source);
    let scheduling = scheduler.spawn();

    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Listen {
                addr: settings.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            addr: settings.listen,
            source,
        })?;
    let shared = Arc::new(Shared {
        engine,
        apps: apps.clone(),
        scheduler,
        admin_key,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let serving = tokio::spawn(accept_loop(listener, shared, shutdown_rx));
    Ok(RunningServer {
        addr,
        apps,
        admin_key_source,
        shutdown,
        serving,
        scheduling,
        refreshing,
    })
}

/// How often a node looks for deploys made through other nodes.
const REFRESH: Duration = Duration::from_secs(1);

async fn refresh_apps(apps: Arc<Apps>) {
    let mut ticks = tokio::time::interval(REFRESH);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(err) = apps.refresh().await {
            tracing::warn!("cannot read the live versions: {err}");
        }
    }
}

/// How long one database call may run.
const QUERY_BUDGET: Duration = Duration::from_secs(10);

/// MongoDB when a URI is configured, else the embedded store in the data directory.
async fn open_documents(settings: &Settings) -> Result<Documents, ServerError> {
    let backend: Arc<dyn DocumentStore> = match &settings.mongodb_uri {
        Some(uri) => Arc::new(MongoStore::connect(uri, QUERY_BUDGET).await?),
        None => Arc::new(SqliteStore::open(
            &settings.data_dir.join("db"),
            QUERY_BUDGET,
        )?),
    };
    Ok(Documents::new(backend, StoreLimits::default()))
}

impl RunningServer {
    /// Stops accepting connections and waits for in-flight requests
    /// (at most 30 s).
    pub async fn shutdown(self) {
        // No new occurrence starts; a run in progress is left to its lease.
        self.scheduling.abort();
        self.refreshing.abort();
        let _ = self.shutdown.send(true);
        let _ = self.serving.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            let shared = shared.clone();
            async move { Ok::<_, Infallible>(dispatch(&shared, req).await) }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!("connection ended: {err}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}");
    }
}

async fn dispatch(shared: &Shared, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if path == "/admin" || path.starts_with("/admin/") {
        return admin::handle(&shared.apps, &shared.scheduler, &shared.admin_key, req).await;
    }
    let request_id = hex::encode(rand::random::<[u8; 8]>());
    let Some((app, app_path)) = resolve_app(&shared.apps, &req) else {
        return error_response(
            StatusCode::NOT_FOUND,
            "app_not_found",
            "no app is deployed at this address: use /APP/... or the host APP.<domain>",
        );
    };
    crate::triggers::http::handle(&shared.engine, &app.http, &app_path, req, &request_id).await
}

/// The app a request is for: the first label of a dotted `Host` when an app
/// has that name (`shop.example.com`), else the first path segment (`/shop/...`,
/// which is stripped).
fn resolve_app<B>(apps: &Apps, req: &Request<B>) -> Option<(Arc<apps::LiveApp>, String)> {
    let path = req.uri().path();
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok());
    if let Some((label, _)) = host.and_then(|h| h.split_once('.'))
        && let Some(app) = apps.get(label)
    {
        return Some((app, path.to_string()));
    }
    let rest = path.strip_prefix('/')?;
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    apps.get(name).map(|app| (app, tail.to_string()))
}
