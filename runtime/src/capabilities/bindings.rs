//! Host bindings of the `kiln:platform` interfaces; each capability uses its own.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "kiln:platform/platform",
    imports: { default: async },
});
