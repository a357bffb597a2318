//! `wasi:http/incoming-handler` as an entry point of the invocation core.

use bytes::Bytes;
use http::Request;
use hyper::body::{Body, Incoming};
use tokio::sync::oneshot;
use wasmtime::Store;
use wasmtime::component::InstancePre;
use wasmtime::component::types::ComponentItem;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use super::body::{GuestBody, GuestFailed, LimitedRequestBody};
use crate::capabilities::auth::Identity;
use crate::invocation::{EntryPoint, Function, InvocationState, Outcome};

/// The export of HTTP functions (any 0.2.x version).
pub const HTTP_EXPORT: &str = "wasi:http/incoming-handler@0.2";

type ResponseSender = oneshot::Sender<Result<http::Response<HyperOutgoingBody>, ErrorCode>>;

/// How a handler call began.
pub enum Handled {
    /// The guest sent this response head; its body streams while it runs,
    /// and fails if the guest fails before finishing it.
    Answered(http::Response<GuestBody<HyperOutgoingBody>>),
    /// The guest answered with an error instead of a response.
    Refused(ErrorCode),
    /// The invocation ended without answering.
    Ended(Outcome<()>),
}

/// Calls `function`'s HTTP handler with `request`. The guest keeps running
/// after it sends the response head, to stream the body, so it runs in its
/// own task, bounded by its deadline.
pub async fn call_handler<B>(
    function: Arc<Function>,
    request_id: &Arc<str>,
    trigger_headers: Vec<(HeaderName, HeaderValue)>,
    identity: Option<Identity>,
    request: Request<B>,
) -> Handled
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    let (response, receiver) = oneshot::channel();
    let failed = GuestFailed::default();
    let task = {
        let failed = failed.clone();
        let request_id = request_id.clone();
        tokio::spawn(async move {
            function
                .invoke(
                    &request_id,
                    trigger_headers,
                    identity,
                    HttpEntry {
                        request,
                        response,
                        failed,
                    },
                )
                .await
                .outcome
        })
    };
    match receiver.await {
        Ok(Ok(answer)) => {
            Handled::Answered(answer.map(|body| GuestBody::new(body, failed, request_id.clone())))
        }
        Ok(Err(code)) => Handled::Refused(code),
        Err(_) => Handled::Ended(
            task.await
                .unwrap_or_else(|join| Outcome::Trapped(join.into())),
        ),
    }
}

/// One request for the guest, and where its response goes: a client's
/// (the default body) or one the host makes up (`ask`).
pub struct HttpEntry<B = LimitedRequestBody<Incoming>> {
    pub request: Request<B>,
    pub response: ResponseSender,
    /// Set unless the handler returns: on a trap, and when the deadline
    /// drops the call.
    pub failed: GuestFailed,
}

/// Sets [`GuestFailed`] when dropped armed: a call that never returned.
struct FailedUnlessReturned(Option<GuestFailed>);

impl Drop for FailedUnlessReturned {
    fn drop(&mut self) {
        if let Some(failed) = self.0.take() {
            failed.set();
        }
    }
}

impl<B> EntryPoint for HttpEntry<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    const EXPORT: &'static str = HTTP_EXPORT;
    type Resolved = ProxyPre<InvocationState>;
    type Output = ();

    fn resolve(pre: &InstancePre<InvocationState>) -> Option<Self::Resolved> {
        let component = pre.component();
        let exported =
            component
                .component_type()
                .exports(component.engine())
                .any(|(export, item)| {
                    export.starts_with(HTTP_EXPORT)
                        && matches!(item.ty, ComponentItem::ComponentInstance(_))
                });
        exported.then(|| ProxyPre::new(pre.clone()).ok()).flatten()
    }

    async fn call(
        self,
        proxy: &Self::Resolved,
        store: &mut Store<InvocationState>,
    ) -> wasmtime::Result<()> {
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, self.request)?;
        let out = store
            .data_mut()
            .http()
            .new_response_outparam(self.response)?;
        let mut failed = FailedUnlessReturned(Some(self.failed));
        let proxy = proxy.instantiate_async(&mut *store).await?;
        let result = proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut *store, request, out)
            .await;
        if result.is_ok() {
            failed.0 = None;
        }
        result
    }
}
