//! A store's memory limit, remembered when reached.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// [`StoreLimits`] that remember whether they refused to grow a memory,
/// so a trap that follows can be put down to the memory limit.
pub struct MemoryLimits {
    limits: StoreLimits,
    refused: bool,
}

impl MemoryLimits {
    /// Linear memory of at most `bytes`; a refused growth fails the guest's
    /// `memory.grow` (it may cope) rather than trapping at once.
    pub fn new(bytes: usize) -> Self {
        MemoryLimits {
            limits: StoreLimitsBuilder::new()
                .memory_size(bytes)
                .trap_on_grow_failure(false)
                .build(),
            refused: false,
        }
    }

    /// Whether a memory growth was refused for being over the limit.
    pub fn refused(&self) -> bool {
        self.refused
    }
}

impl ResourceLimiter for MemoryLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.refused |= !allowed;
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
