// The JavaScript hello of bench/run: a fetch handler with no Kiln imports,
// so the same component runs on Kiln and on `wasmtime serve`.
addEventListener('fetch', (event) =>
  event.respondWith(new Response('hello from JavaScript\n', { headers: { 'content-type': 'text/plain' } })),
);
