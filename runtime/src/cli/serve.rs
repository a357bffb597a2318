//! `kiln serve`: run the server, optionally deploying app folders at start.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use kiln::capabilities::storage::backend::BlobSettings;
use kiln::server::settings::{
    ADMIN_KEY_ENV, FileSettings, ServerLimits, Settings, default_data_dir,
};
use kiln::server::{AdminKeySource, RunningServer};

use super::build::{BuildOptions, build_app};
use kiln::engine::compiler::Compiler;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "KILN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where apps, components, the compile cache and the admin key are kept.
    #[arg(long, env = "KILN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where compiled components are cached (default: `<data dir>/cache`); may be shared.
    #[arg(long, env = "KILN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// The admin API's key; generated and stored in the data directory when absent.
    #[arg(long, env = ADMIN_KEY_ENV, hide_env_values = true)]
    admin_key: Option<String>,
    /// A TOML file with a `[server]` table (the flags' names: listen, data_dir, max_instances, header_timeout, ...).
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// MongoDB for documents and platform data (default: the embedded store).
    #[arg(long, env = "KILN_MONGODB_URI", hide_env_values = true)]
    mongodb_uri: Option<String>,
    /// Keep components and files in this S3 bucket (default: `<data dir>/objects`).
    #[arg(long, env = "KILN_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The bucket's region (default: `AWS_REGION`, else us-east-1).
    #[arg(long, env = "KILN_S3_REGION")]
    s3_region: Option<String>,
    /// An S3-compatible service's URL (MinIO, R2, ...); buckets are addressed by path.
    #[arg(long, env = "KILN_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// S3 credentials (default: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`).
    #[arg(long, env = "KILN_S3_ACCESS_KEY_ID", hide_env_values = true)]
    s3_access_key_id: Option<String>,
    #[arg(long, env = "KILN_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    s3_secret_access_key: Option<String>,
    /// Allow plain http to the S3 endpoint (local test services only).
    #[arg(long, env = "KILN_S3_ALLOW_HTTP")]
    s3_allow_http: bool,
    /// Instances alive at once across every function.
    #[arg(long, env = "KILN_MAX_INSTANCES")]
    max_instances: Option<u32>,
    /// Instances one app may run at once (default: a quarter of --max-instances).
    #[arg(long, env = "KILN_APP_MAX_INSTANCES")]
    app_max_instances: Option<u32>,
    /// Client connections open at once (default 10000).
    #[arg(long, env = "KILN_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Client connections open at once from one IP address (default 1000).
    #[arg(long, env = "KILN_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Time to send a request head, and the longest idle keep-alive (default 10s, at most 30s).
    #[arg(long, env = "KILN_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    header_timeout: Option<std::time::Duration>,
    /// Bytes of guest output one app may write to the server log per minute (default 1 MiB).
    #[arg(long, env = "KILN_APP_LOG_BYTES_PER_MINUTE")]
    app_log_bytes_per_minute: Option<usize>,
    /// Cores one app's guests may keep busy at once: more guests running
    /// past a 10 ms slice take turns (default: half the cores, at least 1).
    #[arg(long, env = "KILN_APP_GUEST_CORES")]
    app_guest_cores: Option<usize>,
    /// How long a shutdown waits for in-flight requests and runs (default 30s).
    #[arg(long, env = "KILN_SHUTDOWN_GRACE", value_parser = humantime::parse_duration)]
    shutdown_grace: Option<std::time::Duration>,
    /// Route `Host: APP.<domain>` to app APP (default: apps by path only).
    #[arg(long, env = "KILN_APP_DOMAIN")]
    app_domain: Option<String>,
    /// A host apps' identity providers may be at although it is internal
    /// (loopback, private); also allows plain http to it. Repeatable.
    #[arg(
        long = "auth-internal-host",
        env = "KILN_AUTH_INTERNAL_HOSTS",
        value_delimiter = ','
    )]
    auth_internal_hosts: Vec<String>,
    /// Build and deploy this app folder at start (repeatable).
    #[arg(long = "app")]
    apps: Vec<PathBuf>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => FileSettings::load(path)?,
        None => FileSettings::default(),
    };
    let max_instances = args.max_instances.or(file.max_instances).unwrap_or(1000);
    let defaults = ServerLimits::for_instances(max_instances);
    let header_timeout = args
        .header_timeout
        .or(file.header_timeout)
        .unwrap_or(defaults.header_timeout);
    if header_timeout.is_zero() || header_timeout > ServerLimits::MAX_HEADER_TIMEOUT {
        anyhow::bail!("header_timeout must be between 1ms and 30s");
    }
    let limits = ServerLimits {
        max_connections: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(defaults.max_connections),
        max_connections_per_ip: args
            .max_connections_per_ip
            .or(file.max_connections_per_ip)
            .unwrap_or(defaults.max_connections_per_ip),
        header_timeout,
        app_max_instances: args
            .app_max_instances
            .or(file.app_max_instances)
            .unwrap_or(defaults.app_max_instances),
        app_log_bytes_per_minute: args
            .app_log_bytes_per_minute
            .or(file.app_log_bytes_per_minute)
            .unwrap_or(defaults.app_log_bytes_per_minute),
        app_guest_cores: args
            .app_guest_cores
            .or(file.app_guest_cores)
            .unwrap_or(defaults.app_guest_cores),
    };
    if limits.max_connections == 0
        || limits.max_connections_per_ip == 0
        || limits.app_max_instances == 0
        || limits.app_guest_cores == 0
    {
        anyhow::bail!("connection and instance limits must be at least 1");
    }
    let settings = Settings {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".parse().expect("valid address")),
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(default_data_dir),
        cache_dir: args.cache_dir.or(file.cache_dir),
        // Large components compile in a child of this executable.
        compiler: match std::env::current_exe() {
            Ok(exe) => Compiler::Child(exe),
            Err(_) => Compiler::InProcess,
        },
        admin_key: args.admin_key.or(file.admin_key).filter(|k| !k.is_empty()),
        max_instances,
        mongodb_uri: args
            .mongodb_uri
            .or(file.mongodb_uri)
            .filter(|u| !u.is_empty()),
        limits,
        app_domain: args
            .app_domain
            .or(file.app_domain)
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty()),
        shutdown_grace: args
            .shutdown_grace
            .or(file.shutdown_grace)
            .unwrap_or(std::time::Duration::from_secs(30)),
        blobs: args
            .s3_bucket
            .or(file.s3_bucket)
            .filter(|b| !b.is_empty())
            .map(|bucket| BlobSettings::S3 {
                bucket,
                region: args.s3_region.or(file.s3_region),
                endpoint: args.s3_endpoint.or(file.s3_endpoint),
                access_key_id: args.s3_access_key_id.or(file.s3_access_key_id),
                secret_access_key: args.s3_secret_access_key.or(file.s3_secret_access_key),
                allow_http: args.s3_allow_http || file.s3_allow_http.unwrap_or(false),
            }),
        auth_internal_hosts: if args.auth_internal_hosts.is_empty() {
            file.auth_internal_hosts
        } else {
            args.auth_internal_hosts
        },
    };
    // Apps are built before the server starts: a build error stops here.
    let built = args
        .apps
        .iter()
        .map(|dir| {
            build_app(dir, BuildOptions::default())
                .with_context(|| format!("app {}", dir.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,cranelift=warn,wasmtime=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(async move {
        let server = kiln::server::start(settings.clone()).await?;
        for app in built {
            let mut components = std::collections::BTreeMap::new();
            for function in &app.functions {
                let bytes = std::fs::read(&function.path)
                    .with_context(|| format!("cannot read {}", function.path.display()))?;
                let digest = server
                    .apps
                    .artifacts()
                    .put_component(Bytes::from(bytes))
                    .await?;
                components.insert(function.name.clone(), digest);
            }
            let record = server
                .apps
                .deploy(&app.name, app.manifest.clone(), components)
                .await
                .with_context(|| format!("deploying app `{}`", app.name))?;
            eprintln!(
                "deployed app `{}` version {}: http://{}/{}/",
                app.name, record.version, server.addr, app.name
            );
        }
        announce(&server, &settings);
        shutdown_signal().await;
        eprintln!("kiln: shutting down; waiting for in-flight requests");
        server.shutdown().await;
        Ok(())
    });
    // A background compile may still be running: do not wait for it (its
    // child process dies with this one).
    runtime.shutdown_background();
    served
}

fn announce(server: &RunningServer, settings: &Settings) {
    match &server.admin_key_source {
        AdminKeySource::Configured => {}
        AdminKeySource::Generated(path) => {
            eprintln!(
                "admin key generated and stored in {} (owner-only); `kiln deploy` on this machine finds it",
                path.display()
            )
        }
        AdminKeySource::Stored(path) => eprintln!("admin key: {}", path.display()),
    }
    eprintln!("data directory: {}", settings.data_dir.display());
    // Tests and scripts read this line to find the port.
    println!("kiln listening on http://{}", server.addr);
    let _ = std::io::stdout().flush();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
