//! A plain `wasi:http/proxy` component (no Kiln imports, so `wasmtime serve`
//! runs it too) that serialises a 50-element JSON list per request.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:http/proxy@0.2.10",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct JsonWork;

impl Guest for JsonWork {
    fn handle(_req: IncomingRequest, out: ResponseOutparam) {
        let items: Vec<_> = (0..50)
            .map(|i| serde_json::json!({"id": i, "name": format!("item {i}"), "price": i as f64 * 1.25, "tags": ["a", "b"]}))
            .collect();
        let body = serde_json::to_vec(&items).unwrap();
        let headers =
            Fields::from_list(&[("content-type".to_string(), b"application/json".to_vec())])
                .unwrap();
        let response = OutgoingResponse::new(headers);
        let outgoing = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = outgoing.write().unwrap();
        for chunk in body.chunks(4096) {
            stream.blocking_write_and_flush(chunk).unwrap();
        }
        drop(stream);
        OutgoingBody::finish(outgoing, None).unwrap();
    }
}

export!(JsonWork);
