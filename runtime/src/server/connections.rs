//! Caps on open client connections, for the whole server and per client
//! address, so no client (a slowloris, say) takes every file descriptor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections, counted; a [`Slot`] is held per open connection.
pub struct Connections {
    max: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One open connection; dropping it frees its place.
pub struct Slot {
    connections: Arc<Connections>,
    ip: IpAddr,
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
        })
    }

    /// A place for a new connection from `ip`, if both caps allow it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
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
        Ok(Slot {
            connections: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
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
}
