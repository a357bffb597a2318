//! Caps on open client connections, for the whole server and per client
//! address, so no client (a slowloris, say) takes every file descriptor;
//! and, when descriptors run out anyway, the connections to shed first:
//! those waiting for a request head, oldest first. A connection waits from
//! its accept until a head arrives, and again from the end of each
//! response ([`BusyBody`]) until the next.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::AbortHandle;

use crate::triggers::http::ResponseBody;

/// Open connections, counted; a [`Slot`] is held per open connection.
pub struct Connections {
    max: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Connections waiting for a request head (new, or idle between requests),
/// by the order they started waiting.
#[derive(Default)]
struct Waiting {
    next: u64,
    by_age: BTreeMap<u64, AbortHandle>,
}

/// One open connection; dropping it frees its place.
pub struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
    /// Ends the connection's task when it is shed.
    abort: OnceLock<AbortHandle>,
    /// Its place among the waiting, while it waits for a head.
    waiting_since: Mutex<Option<u64>>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    ServerFull,
    AddressFull,
}

impl Connections {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Connections {
            max,
            max_per_ip,
            open: Mutex::new(Open::default()),
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// A place for a new connection from `ip`, if both caps allow it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Arc<Slot>, Refused> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.max {
            return Err(Refused::ServerFull);
        }
        let from_ip = open.by_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Err(Refused::AddressFull);
        }
        *from_ip += 1;
        open.total += 1;
        Ok(Arc::new(Slot {
            connections: self.clone(),
            ip,
            abort: OnceLock::new(),
            waiting_since: Mutex::new(None),
        }))
    }

    /// Ends up to `count` of the connections that have waited longest for
    /// a request head; returns how many. Their descriptors close as their
    /// tasks stop, at the runtime's next turn.
    pub fn shed_waiting(&self, count: usize) -> usize {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut shed = 0;
        while shed < count {
            let Some((_, abort)) = waiting.by_age.pop_first() else {
                break;
            };
            abort.abort();
            shed += 1;
        }
        shed
    }

    fn start_waiting(&self, abort: &AbortHandle) -> u64 {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let key = waiting.next;
        waiting.next += 1;
        waiting.by_age.insert(key, abort.clone());
        key
    }

    fn stop_waiting(&self, key: u64) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting.by_age.remove(&key);
    }
}

impl Slot {
    /// The connection's task is running under `abort`; it waits for its
    /// first request head.
    pub fn serving(&self, abort: AbortHandle) {
        let _ = self.abort.set(abort);
        self.waiting();
    }

    /// A request head arrived: the connection is busy, not to be shed.
    pub fn busy(&self) {
        let mut since = self.waiting_since.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = since.take() {
            self.connections.stop_waiting(key);
        }
    }

    /// The response was sent: the connection waits for its next head.
    pub fn waiting(&self) {
        let Some(abort) = self.abort.get() else {
            return;
        };
        let mut since = self.waiting_since.lock().unwrap_or_else(|e| e.into_inner());
        if since.is_none() {
            *since = Some(self.connections.start_waiting(abort));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy();
        let mut open = self
            .connections
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

/// Connections shed at once when accepting fails for lack of descriptors.
pub const SHED_AT_ONCE: usize = 16;
/// Time for shed connections' tasks to stop and close their descriptors.
pub const SHED_SETTLE: Duration = Duration::from_millis(1);
/// The wait before accepting again after any other failure.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Whether an accept failed for lack of file descriptors (the process's or
/// the system's), which shedding idle connections can cure.
pub fn is_out_of_descriptors(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Connections shed for descriptors, logged at most once a second.
#[derive(Default)]
pub struct SheddingReport {
    unlogged: usize,
    logged_at: Option<Instant>,
}

impl SheddingReport {
    pub fn add(&mut self, shed: usize) {
        self.unlogged += shed;
        let due = self
            .logged_at
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1));
        if self.unlogged > 0 && due {
            tracing::warn!(
                "out of file descriptors: closed {} connections that had not sent a request head",
                self.unlogged
            );
            self.unlogged = 0;
            self.logged_at = Some(Instant::now());
        }
    }
}

/// A response body that marks its connection as waiting for the next
/// request head once the body is done (dropped).
pub struct BusyBody {
    pub body: ResponseBody,
    pub slot: Arc<Slot>,
}

impl hyper::body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for BusyBody {
    fn drop(&mut self) {
        self.slot.waiting();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_connections_per_address_and_in_total() {
        let connections = Connections::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap());
        let a1 = connections.admit(a).unwrap();
        let _a2 = connections.admit(a).unwrap();
        assert_eq!(connections.admit(a).err(), Some(Refused::AddressFull));
        let _b1 = connections.admit(b).unwrap();
        assert_eq!(connections.admit(b).err(), Some(Refused::ServerFull));
        drop(a1);
        assert!(connections.admit(b).is_ok());
    }

    #[test]
    fn sheds_the_longest_waiting_connections_and_never_a_busy_one() {
        let connections = Connections::new(10, 10);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let slots: Vec<_> = (0..4)
            .map(|_| {
                let slot = connections.admit(ip).unwrap();
                let (abort, _) = AbortHandle::new_pair();
                slot.serving(abort.clone());
                (slot, abort)
            })
            .collect();
        // The first is serving a request; the second went idle after one.
        slots[0].0.busy();
        slots[1].0.busy();
        slots[1].0.waiting();
        assert_eq!(connections.shed_waiting(2), 2);
        let aborted: Vec<bool> = slots.iter().map(|(_, a)| a.is_aborted()).collect();
        assert_eq!(aborted, [false, false, true, true]);
        assert_eq!(connections.shed_waiting(5), 1);
        assert!(slots[1].1.is_aborted() && !slots[0].1.is_aborted());
        drop(slots);
        assert_eq!(connections.shed_waiting(5), 0);
    }
}
