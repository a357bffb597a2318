//! A plain `wasi:http/proxy` component that knows nothing of Kiln: it answers
//! every request with its method and path, as `wasmtime serve` would run it.

wit_bindgen::generate!({
    path: "../../wit",
    world: "wasi:http/proxy@0.2.10",
    generate_all,
});

use exports::wasi::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct Plain;

impl Guest for Plain {
    fn handle(req: IncomingRequest, out: ResponseOutparam) {
        let text = format!(
            "plain wasi:http says hi to {:?} {}\n",
            req.method(),
            req.path_with_query().unwrap_or_default()
        );
        let headers =
            Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).unwrap();
        let response = OutgoingResponse::new(headers);
        let body = response.body().unwrap();
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().unwrap();
        stream.blocking_write_and_flush(text.as_bytes()).unwrap();
        drop(stream);
        OutgoingBody::finish(body, None).unwrap();
    }
}

export!(Plain);
