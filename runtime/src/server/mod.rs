//! The server: composes the engine, the capabilities and the triggers,
//! hosts the apps, serves the admin API, and shuts down gracefully.

pub mod admin;
pub mod apps;
pub mod artifacts;
mod connections;
mod json_body;
pub mod manifest;
mod platform;
pub mod settings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::apps::{Apps, DeployError};
use self::artifacts::Artifacts;
use self::connections::{
    ACCEPT_BACKOFF, BusyBody, Connections, Refused, SHED_AT_ONCE, SHED_SETTLE, SheddingReport,
    is_out_of_descriptors,
};
use self::manifest::RESERVED_APP_NAME;
use self::settings::{ServerLimits, Settings, SettingsError, stored_admin_key};
use crate::capabilities::auth::Accounts;
use crate::capabilities::storage::Files;
use crate::capabilities::storage::backend::{BlobSettings, Blobs};
use crate::capabilities::{Backends, Capabilities};
use crate::engine::compiler::Tier;
use crate::engine::{EngineError, EngineSettings};
use crate::invocation::{Invoker, Limits};
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{DocumentStore, Documents, StoreLimits};
use crate::triggers::cron::CronRunner;
use crate::triggers::http::{ApiError, ErrorCode, ResponseBody, is_platform_path};

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
    #[error("file backend: {0}")]
    Files(#[from] crate::capabilities::storage::StorageError),
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
    cron: Arc<CronRunner>,
    shutdown_grace: Duration,
    shutdown: watch::Sender<bool>,
    serving: tokio::task::JoinHandle<()>,
    scheduling: tokio::task::JoinHandle<()>,
    refreshing: tokio::task::JoinHandle<()>,
    sweeping: tokio::task::JoinHandle<()>,
}

struct Shared {
    apps: Arc<Apps>,
    cron: Arc<CronRunner>,
    admin_key: String,
    /// `Host: APP.<domain>` routes to APP; `None`: by path only.
    app_domain: Option<String>,
}

/// Opens the data directory, loads the deployed apps and starts listening.
pub async fn start(settings: Settings) -> Result<RunningServer, ServerError> {
    let data_dir = &settings.data_dir;
    let objects_dir = data_dir.join("objects");
    make_owner_only(data_dir).map_err(|source| ServerError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    std::fs::create_dir_all(&objects_dir).map_err(|source| ServerError::DataDir {
        path: objects_dir.clone(),
        source,
    })?;
    match raise_file_limit() {
        Some(open_files) => {
            tracing::info!("open-file limit: {open_files} (the soft limit raised to the hard one)")
        }
        None => tracing::warn!("cannot read or raise the open-file limit"),
    }
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
    let blob_settings = settings.blobs.clone().unwrap_or(BlobSettings::Local {
        root: objects_dir.clone(),
    });
    let blobs = Arc::new(Blobs::open(&blob_settings)?);
    let artifacts = Artifacts::new(
        blobs.store().clone(),
        blobs.local_root().map(|root| root.to_path_buf()),
    );
    let documents = open_documents(&settings).await?;
    let files = Files::new(documents.clone(), blobs, &admin_key);
    files.create_indexes().await?;
    let accounts = Arc::new(Accounts::new(
        documents.clone(),
        settings.auth_internal_hosts.clone(),
    ));
    accounts.create_indexes().await?;
    let askers = Arc::new(crate::capabilities::collections::Askers::default());
    let backends = Backends {
        documents: documents.clone(),
        accounts: accounts.clone(),
        files: files.clone(),
        askers: askers.clone(),
    };
    let invoker = Invoker::new(
        &EngineSettings {
            cache_dir: settings
                .cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("cache")),
            max_instances: settings.max_instances,
            // Servers sharing a cache folder share the admin key too.
            cache_key: Sha256::digest(format!("kiln compile cache\n{admin_key}")).to_vec(),
            max_memory_bytes: Limits::MAX_MEMORY_MB as usize * 1024 * 1024,
            compiler: settings.compiler.clone(),
            tier: Tier::Optimized,
        },
        Arc::new(Capabilities::new(&backends)),
        Arc::new(artifacts.clone()),
    )?;
    let apps = Arc::new(Apps::new(
        invoker,
        accounts,
        files.clone(),
        artifacts,
        documents.clone(),
        settings.limits,
    ));
    askers.set(Arc::new(platform::data::LiveAsker(Arc::downgrade(&apps))));
    apps.refresh().await?;
    let refreshing = tokio::spawn(refresh_apps(apps.clone()));
    let sweeping = tokio::spawn(crate::capabilities::storage::sweep::run(files));
    let cron_source = {
        let apps = apps.clone();
        Arc::new(move || apps.live_crons())
    };
    let cron = CronRunner::new(documents, cron_source);
    let scheduling = cron.spawn();

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
        apps: apps.clone(),
        cron: cron.clone(),
        admin_key,
        // DNS names are not case-sensitive.
        app_domain: settings.app_domain.as_deref().map(str::to_ascii_lowercase),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let serving = tokio::spawn(accept_loop(
        listener,
        shared,
        settings.limits,
        settings.shutdown_grace,
        shutdown_rx,
    ));
    Ok(RunningServer {
        addr,
        apps,
        admin_key_source,
        cron,
        shutdown_grace: settings.shutdown_grace,
        shutdown,
        serving,
        scheduling,
        refreshing,
        sweeping,
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
    /// Stops accepting connections and starting runs, and waits for
    /// in-flight requests and runs (at most the shutdown grace); runs still
    /// going then are recorded as interrupted.
    pub async fn shutdown(self) {
        self.scheduling.abort();
        self.refreshing.abort();
        self.sweeping.abort();
        let _ = self.shutdown.send(true);
        tokio::join!(self.cron.drain(self.shutdown_grace), async {
            let _ = self.serving.await;
        });
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limits: ServerLimits,
    grace: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Connections::new(limits.max_connections, limits.max_connections_per_ip);
    // HTTP/1.1 only: every bound below is an HTTP/1 setting, and HTTP/2
    // stays off until it is bounded the same way.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // Also bounds how long a kept-alive connection may sit idle: the
        // timer restarts when the connection waits for its next request.
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut shedding = SheddingReport::default();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) if is_out_of_descriptors(&err) => {
                    // Make room from connections that have not sent a head
                    // (slowloris), oldest first, instead of waiting for
                    // their timeout while every new client is refused.
                    let shed = connections.shed_waiting(SHED_AT_ONCE);
                    shedding.add(shed);
                    if shed > 0 {
                        tokio::time::sleep(SHED_SETTLE).await;
                    } else {
                        tracing::warn!("accept failed with no connection to shed: {err}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let slot = match connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refused) => {
                refuse(stream, refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = {
            let (shared, slot) = (shared.clone(), slot.clone());
            hyper::service::service_fn(move |req| {
                let (shared, slot) = (shared.clone(), slot.clone());
                slot.busy();
                async move {
                    let response = dispatch(&shared, req, peer).await;
                    Ok::<_, Infallible>(response.map(|body| BusyBody { body, slot }))
                }
            })
        };
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let (conn, abort) = futures::future::abortable(graceful.watch(conn));
        slot.serving(abort);
        tokio::spawn(async move {
            if let Ok(Err(err)) = conn.await {
                tracing::debug!("connection ended: {err}");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within {grace:?}");
    }
}

/// Most header fields in one request head.
const MAX_HEADERS: usize = 100;
/// Most bytes of one request head (hyper's read buffer).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Answers a connection over a cap with a 503 if the socket takes it at
/// once, then closes it: never waits on the client.
fn refuse(stream: tokio::net::TcpStream, refused: Refused) {
    let why = match refused {
        Refused::ServerFull => "the server is at its connection limit",
        Refused::AddressFull => "this address is at its connection limit",
    };
    let body = ApiError::new(ErrorCode::TooManyConnections, why).body();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// Creates the data directory if needed and makes it owner-only (0700):
/// it holds every app's manifests, variables and data.
fn make_owner_only(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // Files and folders the server creates from now on are owner-only too.
    // SAFETY: umask only swaps the process's file-mode mask.
    unsafe { libc::umask(0o077) };
    Ok(())
}

/// Raises the soft limit on open files to the hard limit, so the
/// connection caps, not the descriptor limit, decide who is refused;
/// returns the limit now in force.
fn raise_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur as u64)
}

/// Where a request goes: the admin API, or an app. A `Host` naming an app
/// sends everything to that app (the admin API never shadows its routes);
/// otherwise `/admin/...` is the admin API (no app may be named `admin`)
/// and the first path segment names the app.
async fn dispatch(
    shared: &Shared,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ResponseBody> {
    let request_id: Arc<str> = hex::encode(rand::random::<[u8; 8]>()).into();
    let answer = match resolve(&shared.apps, shared.app_domain.as_deref(), &req) {
        Destination::Admin => {
            admin::handle(&shared.apps, &shared.cron, &shared.admin_key, req).await
        }
        Destination::App(live, path) if is_platform_path(&path) => {
            platform::handle(
                &live,
                shared.apps.documents(),
                &path,
                req,
                peer,
                &request_id,
            )
            .await
        }
        Destination::App(live, path) => {
            crate::triggers::http::handle(&live.app, &live.http, &path, req, &request_id).await
        }
        Destination::NoApp => Err(ApiError::new(
            ErrorCode::AppNotFound,
            "no app is deployed at this address: use /APP/... (or the host APP.<domain> where the server has an app domain)",
        )),
    };
    let mut response = answer.unwrap_or_else(ApiError::into_response);
    response.headers_mut().insert(
        "kiln-request-id",
        http::HeaderValue::from_str(&request_id).expect("hex id"),
    );
    response
}

enum Destination {
    Admin,
    /// The app's live version and the app-relative path.
    App(Arc<apps::LiveApp>, String),
    NoApp,
}

/// With an app domain configured, a `Host` of `APP.<domain>` names the app
/// (and only that app: no fallback to the path); any other host, or no
/// domain, routes by the first path segment (`/shop/...`, which is
/// stripped). So deploying an app can never capture traffic meant for
/// another, nor the admin API's.
fn resolve<B>(apps: &Apps, app_domain: Option<&str>, req: &Request<B>) -> Destination {
    let path = req.uri().path();
    if let Some(domain) = app_domain {
        let host = req
            .uri()
            .host()
            .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
            .map(|h| {
                h.rsplit_once(':')
                    .map_or(h, |(name, _)| name)
                    .to_ascii_lowercase()
            });
        if let Some(label) = host.as_deref().and_then(|h| app_label(h, domain)) {
            return match apps.get(label) {
                Some(app) => Destination::App(app, path.to_string()),
                None => Destination::NoApp,
            };
        }
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Destination::NoApp;
    };
    let (name, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if name == RESERVED_APP_NAME {
        return Destination::Admin;
    }
    match apps.get(name) {
        Some(app) => Destination::App(app, tail.to_string()),
        None => Destination::NoApp,
    }
}

/// `shop` for `shop.<domain>`; none for the domain itself or deeper names.
fn app_label<'a>(host: &'a str, domain: &str) -> Option<&'a str> {
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_single_label_under_the_app_domain_names_an_app() {
        assert_eq!(
            app_label("shop.apps.example.com", "apps.example.com"),
            Some("shop")
        );
        assert_eq!(app_label("apps.example.com", "apps.example.com"), None);
        assert_eq!(
            app_label("a.shop.apps.example.com", "apps.example.com"),
            None
        );
        assert_eq!(app_label("shopapps.example.com", "apps.example.com"), None);
        assert_eq!(app_label("shop.example.org", "apps.example.com"), None);
    }
}
