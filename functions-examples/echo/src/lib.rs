//! Streams the request body back as it arrives: each chunk read is written
//! before the next is read, so a body larger than memory passes through.

use kiln_sdk::bindings::wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use kiln_sdk::bindings::wasi::io::streams::StreamError;

fn echo(req: IncomingRequest, out: ResponseOutparam) {
    let content_type = req
        .headers()
        .get("content-type")
        .into_iter()
        .next()
        .unwrap_or_else(|| b"application/octet-stream".to_vec());
    let headers =
        Fields::from_list(&[("content-type".to_string(), content_type)]).expect("a valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("a new response has a body");
    ResponseOutparam::set(out, Ok(response));
    let output = body.write().expect("a new body has a stream");
    let incoming = req.consume().expect("the body is consumed once");
    let input = incoming.stream().expect("the stream is taken once");
    loop {
        match input.blocking_read(4096) {
            Ok(chunk) => {
                if output.blocking_write_and_flush(&chunk).is_err() {
                    return;
                }
            }
            Err(StreamError::Closed) => break,
            // The client stopped sending (or went over the size limit).
            Err(StreamError::LastOperationFailed(_)) => return,
        }
    }
    drop(output);
    let _ = OutgoingBody::finish(body, None);
}

kiln_sdk::raw_http_function!(echo);
