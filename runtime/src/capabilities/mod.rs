//! The `kiln:platform` host interfaces, one module per WIT interface.
//!
//! Each capability has three phases: once per server it adds itself to the
//! linker ([`add_to_linker`]); once per deployment it validates and builds
//! its shared state; once per invocation it borrows that state from the
//! store. `config`, `database` and `scheduler` are implemented so far: a component
//! importing another `kiln:platform` interface fails to link at deploy,
//! naming the import.

pub mod config;
mod database;
pub mod scheduler;

use wasmtime::component::Linker;

use crate::engine::InvocationState;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "kiln:platform/platform",
        imports: { default: async },
    });
}

/// The backends the capabilities reach, shared by every invocation.
#[derive(Clone)]
pub struct Services {
    pub documents: crate::store::Documents,
}

/// Adds every implemented capability to the linker.
pub fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    config::add_to_linker(linker)?;
    database::add_to_linker(linker)?;
    scheduler::add_to_linker(linker)
}
