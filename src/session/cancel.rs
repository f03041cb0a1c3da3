//! Cancel keys: the proxy gives each client its own BackendKeyData and maps it to whatever
//! server connection that client is using at the moment, so a CancelRequest reaches the server
//! running that client's query and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::pool::Pool;

/// Where a client's query is running now.
#[derive(Clone)]
pub struct Target {
    /// The pool (for the server address).
    pub pool: Arc<Pool>,
    /// The server's process id and secret.
    pub pid: i32,
    pub secret: i32,
}

/// One client's slot.
#[derive(Default)]
pub struct CancelSlot {
    target: Mutex<Option<Target>>,
    /// Held while a cancel is being delivered; a session that cannot take it when releasing
    /// its server connection discards the connection rather than hand it to another client who
    /// might receive the stray cancel.
    pub busy: tokio::sync::Mutex<()>,
}

impl CancelSlot {
    /// Records the server connection the client now uses (or none).
    pub fn set(&self, t: Option<Target>) {
        *self.target.lock().expect("cancel slot") = t;
    }
}

/// Issued pid → (secret, the client's slot).
type KeyMap = HashMap<i32, (i32, Arc<CancelSlot>)>;

/// All clients' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    map: Arc<Mutex<KeyMap>>,
}

/// Removes the client's key when its session ends.
pub struct Registration {
    map: Arc<Mutex<KeyMap>>,
    /// The key handed to the client.
    pub pid: i32,
    pub secret: i32,
    /// The client's slot.
    pub slot: Arc<CancelSlot>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.map.lock().expect("cancels").remove(&self.pid);
    }
}

impl CancelRegistry {
    /// Issues a fresh random key for a new client.
    pub fn register(&self) -> Registration {
        let slot = Arc::new(CancelSlot::default());
        let mut map = self.map.lock().expect("cancels");
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 || map.contains_key(&pid) {
                continue;
            }
            let secret = rand::random::<i32>();
            map.insert(pid, (secret, slot.clone()));
            return Registration {
                map: self.map.clone(),
                pid,
                secret,
                slot,
            };
        }
    }

    /// Delivers a client's CancelRequest to the server running its query; returns whether one
    /// was sent. Unknown keys and wrong secrets are ignored (as PostgreSQL does).
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let slot = {
            let map = self.map.lock().expect("cancels");
            match map.get(&pid) {
                Some((s, slot)) if *s == secret => slot.clone(),
                _ => return false,
            }
        };
        let _busy = slot.busy.lock().await;
        let Some(t) = slot.target.lock().expect("cancel slot").clone() else {
            return false;
        };
        let send = async {
            let mut s = TcpStream::connect(&t.pool.key.address).await?;
            let mut buf = BytesMut::new();
            postgres_protocol::message::frontend::cancel_request(t.pid, t.secret, &mut buf);
            s.write_all(&buf).await?;
            // The server closes the connection once it has signalled the backend; waiting for
            // that keeps the target connection out of other clients' hands until then.
            let mut sink = [0u8; 64];
            while s.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(5), send).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cancel request to server failed");
                false
            }
            Err(_) => false,
        }
    }
}
