//! Bodies with a size limit, in both directions, streamed.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use wasmtime_wasi_http::Error as HttpError;

/// The body of every response the server sends.
pub type ResponseBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A response body of no bytes.
pub fn empty_body() -> ResponseBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response body of `bytes`, already in memory.
pub fn full_body(bytes: impl Into<Bytes>) -> ResponseBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A request body that fails once more than `remaining` bytes arrive, and
/// records that it did so the trigger can answer 413; `kiln-*` trailers are
/// dropped.
pub struct LimitedRequestBody<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<B> LimitedRequestBody<B> {
    pub fn new(inner: B, limit: u64, exceeded: Arc<AtomicBool>) -> Self {
        LimitedRequestBody {
            inner,
            remaining: limit,
            limit,
            exceeded,
        }
    }
}

impl<B> Body for LimitedRequestBody<B>
where
    B: Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(mut frame))) => {
                // `kiln-*` names are the trigger's to set, in trailers too.
                if let Some(trailers) = frame.trailers_mut() {
                    let spoofed: Vec<_> = trailers
                        .keys()
                        .filter(|k| k.as_str().starts_with(super::KILN_HEADER_PREFIX))
                        .cloned()
                        .collect();
                    for name in spoofed {
                        trailers.remove(name);
                    }
                }
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        this.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(HttpError::HttpRequestBodySize(Some(
                            this.limit,
                        )))));
                    }
                    this.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Set when a guest's invocation ends without returning (it timed out or
/// trapped), before its store, and so its response body's sender, is
/// dropped.
#[derive(Clone, Default)]
pub struct GuestFailed(Arc<AtomicBool>);

impl GuestFailed {
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A guest's response body that fails instead of ending when the guest's
/// invocation failed first. wasi:http ends a body whose store was dropped
/// as if the guest had finished it, so a response cut at the deadline would
/// otherwise look complete (a clean last chunk). A guest that finishes its
/// body, then fails, may also see its response cut: the error errs on the
/// side of "incomplete".
pub struct GuestBody<B> {
    inner: B,
    failed: GuestFailed,
    request_id: Arc<str>,
}

impl<B> GuestBody<B> {
    pub fn new(inner: B, failed: GuestFailed, request_id: Arc<str>) -> Self {
        GuestBody {
            inner,
            failed,
            request_id,
        }
    }
}

impl<B> Body for GuestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) if this.failed.is_set() => {
                tracing::warn!(
                    request_id = %this.request_id,
                    "response cut off: the function ended (timed out or trapped) before finishing its body"
                );
                Poll::Ready(Some(Err(
                    "the function ended before finishing its response".into(),
                )))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        // Never claim the end early: the end is decided when it is polled.
        false
    }
}

/// A response body cut off after `limit` bytes: the rest is dropped and the
/// stream ends with an error, so the client sees an incomplete response
/// rather than a silently short one.
pub struct LimitedResponseBody<B> {
    inner: B,
    remaining: u64,
    on_exceeded: Option<Box<dyn FnOnce() + Send>>,
}

impl<B> LimitedResponseBody<B> {
    pub fn new(inner: B, limit: u64, on_exceeded: impl FnOnce() + Send + 'static) -> Self {
        LimitedResponseBody {
            inner,
            remaining: limit,
            on_exceeded: Some(Box::new(on_exceeded)),
        }
    }
}

impl<B> Body for LimitedResponseBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.on_exceeded.is_none() {
            return Poll::Ready(Some(Err("response body over the function's limit".into())));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(mut data) => {
                    let len = data.len() as u64;
                    if len > this.remaining {
                        data.truncate(this.remaining as usize);
                        this.remaining = 0;
                        if let Some(report) = this.on_exceeded.take() {
                            report();
                        }
                    } else {
                        this.remaining -= len;
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.on_exceeded.is_some() && self.inner.is_end_stream()
    }
}
