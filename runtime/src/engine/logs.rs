//! Captures a guest's stdout and stderr, bounded, for the invocation's log.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// A bounded buffer the guest writes into. Output past the bound is dropped
/// (and counted) rather than failing the write: a chatty function must not
/// trap because of its logging.
#[derive(Clone)]
pub struct LogCapture {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
    limit: usize,
}

impl LogCapture {
    pub fn new(limit: usize) -> Self {
        LogCapture {
            inner: Arc::new(Mutex::new(Captured {
                limit,
                ..Captured::default()
            })),
        }
    }

    /// What the guest wrote, lossily decoded, and how many bytes were dropped.
    pub fn take(&self) -> (String, usize) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&c.bytes).into_owned();
        c.bytes.clear();
        (text, std::mem::take(&mut c.dropped))
    }

    fn append(&self, buf: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = c.limit.saturating_sub(c.bytes.len());
        let keep = room.min(buf.len());
        c.bytes.extend_from_slice(&buf[..keep]);
        c.dropped += buf.len() - keep;
    }
}

impl IsTerminal for LogCapture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogCapture {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for LogCapture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_output_up_to_the_limit_and_counts_the_rest() {
        let logs = LogCapture::new(5);
        logs.append(b"hello world");
        assert_eq!(logs.take(), ("hello".to_string(), 6));
        assert_eq!(logs.take(), (String::new(), 0));
    }
}
