//! The server's settings: flags, then environment, then the config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Environment variable holding the admin key.
pub const ADMIN_KEY_ENV: &str = "KILN_ADMIN_KEY";
/// File under the data directory holding a generated admin key.
pub const ADMIN_KEY_FILE: &str = "admin-key";

/// Settings of one server.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where compiled components are cached; `None`: `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// `None`: use the key stored in the data directory, generating it on first start.
    pub admin_key: Option<String>,
    /// Instances alive at once across every function.
    pub max_instances: u32,
    /// MongoDB for documents and platform data; `None`: the embedded store.
    pub mongodb_uri: Option<String>,
    /// Where components and files are kept; `None`: `<data_dir>/objects`.
    pub blobs: Option<crate::capabilities::storage::backend::BlobSettings>,
    /// Bounds on what one client and one app may take of the server.
    pub limits: ServerLimits,
    /// With a domain, `Host: APP.<domain>` routes to app APP; without one,
    /// apps are reached by path only (`/APP/...`).
    pub app_domain: Option<String>,
    /// How long a shutdown waits for in-flight requests and runs.
    pub shutdown_grace: std::time::Duration,
    /// Hosts an app's identity provider may be at although they resolve to
    /// internal addresses (and may be reached over plain http).
    pub auth_internal_hosts: Vec<String>,
    /// Where components compile: `kiln serve` compiles large ones in a
    /// child of its own executable.
    pub compiler: crate::engine::compiler::Compiler,
}

/// Bounds on what clients and apps may take of the server (README,
/// "Limits and isolation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Open client connections at once; more are closed at accept.
    pub max_connections: usize,
    /// Open client connections at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Time to receive a whole request head, and the longest a kept-alive
    /// connection may sit idle between requests.
    pub header_timeout: std::time::Duration,
    /// Instances one app may run at once, across its functions (a share of
    /// `max_instances`, so one app cannot take every slot).
    pub app_max_instances: u32,
    /// Bytes of guest output one app may write to the server log per minute.
    pub app_log_bytes_per_minute: usize,
    /// Guests of one app that may run at once past an epoch tick: the cores
    /// one app may keep busy while others wait.
    pub app_guest_cores: usize,
}

impl ServerLimits {
    /// The longest `header_timeout` a server may be given.
    pub const MAX_HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

    /// The defaults for a server with `max_instances` slots.
    pub fn for_instances(max_instances: u32) -> Self {
        ServerLimits {
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            header_timeout: std::time::Duration::from_secs(10),
            app_max_instances: (max_instances / 4).max(1),
            app_log_bytes_per_minute: 1024 * 1024,
            app_guest_cores: default_app_guest_cores(),
        }
    }
}

/// Half the machine's cores, at least one: an app that spins leaves the
/// other half to everyone else.
fn default_app_guest_cores() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 2).max(1)
}

/// The `[server]` table of a config file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub admin_key: Option<String>,
    pub max_instances: Option<u32>,
    pub mongodb_uri: Option<String>,
    pub s3_bucket: Option<String>,
    pub s3_region: Option<String>,
    pub s3_endpoint: Option<String>,
    pub s3_access_key_id: Option<String>,
    pub s3_secret_access_key: Option<String>,
    pub s3_allow_http: Option<bool>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<std::time::Duration>,
    pub app_max_instances: Option<u32>,
    pub app_log_bytes_per_minute: Option<usize>,
    pub app_guest_cores: Option<usize>,
    pub app_domain: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_grace: Option<std::time::Duration>,
    #[serde(default)]
    pub auth_internal_hosts: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: FileSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("admin key file {path}: {source}")]
    AdminKey {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FileSettings {
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let err = |message: String| SettingsError::File {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let file: ConfigFile =
            toml::from_str(&text).map_err(|e| err(super::manifest::toml_error(&text, &e)))?;
        Ok(file.server)
    }
}

/// The data directory when none is configured: `$XDG_DATA_HOME/kiln`, else
/// `~/.local/share/kiln`, else `.kiln` in the working directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("kiln");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/kiln"),
        None => PathBuf::from(".kiln"),
    }
}

/// The admin key stored in `data_dir`, generated (readable by its owner
/// only) when absent. Returns the key and whether it was just generated.
pub fn stored_admin_key(data_dir: &Path) -> Result<(String, bool), SettingsError> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    let io = |source| SettingsError::AdminKey {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok((key.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let key = hex::encode(rand::random::<[u8; 32]>());
    write_private(&path, &key).map_err(io)?;
    Ok((key, true))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// Reads the stored admin key without generating one (for `kiln deploy`).
pub fn read_stored_admin_key(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(ADMIN_KEY_FILE))
        .ok()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
}
