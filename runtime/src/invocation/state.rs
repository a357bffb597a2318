//! The data of one invocation's store: the sandbox (WASI with nothing
//! granted), captured stdio, memory limits, and each capability's state.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::Limits;
use crate::capabilities::Instances;
use crate::engine::logs::LogCapture;
use crate::engine::{MemoryLimits, StoreData};

/// Most bytes of stdout and of stderr kept per invocation.
const LOG_LIMIT: usize = 64 * 1024;

/// The `T` of every invocation's `Store<T>`.
pub struct InvocationState {
    pub(super) stdout: LogCapture,
    pub(super) stderr: LogCapture,
    limits: MemoryLimits,
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    capabilities: Instances,
}

impl InvocationState {
    /// `prepare` builds the capabilities' states; it may add to the
    /// sandbox (the config's variables are also the environment).
    pub(super) fn new(
        limits: &Limits,
        prepare: impl FnOnce(&mut WasiCtxBuilder) -> Instances,
    ) -> Self {
        let stdout = LogCapture::new(LOG_LIMIT);
        let stderr = LogCapture::new(LOG_LIMIT);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let capabilities = prepare(&mut wasi);
        InvocationState {
            stdout,
            stderr,
            limits: MemoryLimits::new(limits.memory_bytes()),
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            capabilities,
        }
    }
}

impl InvocationState {
    /// Whether the guest asked for memory past its limit.
    pub(super) fn memory_refused(&self) -> bool {
        self.limits.refused()
    }
}

impl StoreData for InvocationState {
    fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }
}

impl crate::capabilities::CapabilityView for InvocationState {
    fn capabilities(&mut self) -> &mut Instances {
        &mut self.capabilities
    }

    fn capabilities_and_table(&mut self) -> (&mut Instances, &mut ResourceTable) {
        (&mut self.capabilities, &mut self.table)
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
            hooks: self.capabilities.http_hooks(),
        }
    }
}
