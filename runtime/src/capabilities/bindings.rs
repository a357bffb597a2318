//! Host bindings of the `kiln:platform` interfaces; each capability uses its own.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kiln:platform/platform",
    imports: { default: async },
    with: {
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "kiln:platform/storage.writer": super::storage::Writer,
    },
});
