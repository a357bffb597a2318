//! The state of one invocation's store.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Limits;
use super::logs::LogCapture;
use super::outbound::{OutboundEntry, OutboundPolicy};

/// Most bytes of stdout and of stderr kept per invocation.
const LOG_LIMIT: usize = 64 * 1024;

/// Who is invoked, with what configuration: set by the trigger.
#[derive(Clone)]
pub struct InvocationContext {
    pub request_id: String,
    pub app: Arc<str>,
    pub function: Arc<str>,
    pub limits: Limits,
    /// The function's variables; also its only environment variables.
    pub variables: Arc<[(String, String)]>,
    /// Hosts the function may call over HTTP.
    pub allowed_outbound_hosts: Arc<[OutboundEntry]>,
    /// Every function of the app's live version (one-off jobs may name them).
    pub app_functions: Arc<[Arc<str>]>,
    /// The backends of the platform capabilities.
    pub services: crate::capabilities::Services,
}

/// The `T` of every invocation's `Store<T>`.
pub struct InvocationState {
    pub context: InvocationContext,
    pub stdout: LogCapture,
    pub stderr: LogCapture,
    pub(super) limits: StoreLimits,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    outbound: OutboundPolicy,
}

impl InvocationState {
    pub(super) fn new(context: InvocationContext) -> Self {
        let stdout = LogCapture::new(LOG_LIMIT);
        let stderr = LogCapture::new(LOG_LIMIT);
        let wasi = WasiCtx::builder()
            .envs(&context.variables)
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(context.limits.memory_bytes())
            .trap_on_grow_failure(false)
            .build();
        InvocationState {
            outbound: OutboundPolicy::new(context.allowed_outbound_hosts.clone()),
            context,
            stdout,
            stderr,
            limits,
            table: ResourceTable::new(),
            wasi,
            http: WasiHttpCtx::new(),
        }
    }
}

impl WasiView for InvocationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InvocationState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}
