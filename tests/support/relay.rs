//! A fault-injecting TCP relay: listens on 127.0.0.1:0 and forwards to a target, with modes
//! to simulate network failures. It runs on its own thread and runtime, so it keeps working
//! whether the test is sync or async and whatever the test's thread is blocked on.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Pass,
    /// Like a network partition: existing connections stay open but no byte moves in
    /// either direction (bytes are held, not read further; switching back to `Pass`
    /// delivers them late, as TCP would once a partition heals). New connections are
    /// accepted but never answered (nor connected to the target) while this lasts.
    Blackhole,
    /// New connections are accepted and closed at once with a RST. Existing connections
    /// keep forwarding.
    Refuse,
}

#[derive(Default)]
struct Shared {
    /// Live connections: id -> reset generation at creation.
    live: Mutex<HashMap<u64, u64>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
}

/// See the module docs. Stops (closing every connection) on drop.
pub struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    mode_tx: watch::Sender<Mode>,
    reset_tx: watch::Sender<u64>,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `target` in `Mode::Pass`.
    pub fn start(target: SocketAddr) -> Relay {
        let (mode_tx, mode_rx) = watch::channel(Mode::Pass);
        let (reset_tx, reset_rx) = watch::channel(0u64);
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Shared::default());
        let shared2 = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("relay->{target}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("relay runtime");
                rt.block_on(accept_loop(
                    target,
                    mode_rx,
                    reset_rx,
                    shared2,
                    shutdown_rx,
                    addr_tx,
                ));
                // Dropping the runtime here cancels every connection task (closing sockets).
            })
            .expect("spawning relay thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay did not start")
            .expect("relay bind failed");
        Relay {
            addr,
            target,
            mode_tx,
            reset_tx,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Starts a relay in front of a cluster node.
    pub fn for_node(node: &switchyard::localpg::Node) -> Relay {
        Self::start(node.addr().parse().expect("node address"))
    }

    /// The relay's listen address (127.0.0.1:port).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// "127.0.0.1:PORT", for configs.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn mode(&self) -> Mode {
        *self.mode_tx.borrow()
    }

    /// Switches mode; takes effect immediately for existing and new connections.
    pub fn set_mode(&self, mode: Mode) {
        self.mode_tx.send_replace(mode);
    }

    /// Closes every current connection (both sides) with a RST (SO_LINGER 0) and waits
    /// (up to 5 s) until they are gone. Connections accepted afterwards are unaffected.
    pub fn reset_all(&self) {
        let gen = {
            let mut g = 0;
            self.reset_tx.send_modify(|v| {
                *v += 1;
                g = *v;
            });
            g
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let left = self
                .shared
                .live
                .lock()
                .unwrap()
                .values()
                .filter(|g0| **g0 < gen)
                .count();
            if left == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Connections currently open through the relay (including held ones).
    pub fn active_connections(&self) -> usize {
        self.shared.live.lock().unwrap().len()
    }

    /// Connections accepted since start.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    target: SocketAddr,
    mode_rx: watch::Receiver<Mode>,
    reset_rx: watch::Receiver<u64>,
    shared: Arc<Shared>,
    mut shutdown_rx: oneshot::Receiver<()>,
    addr_tx: std::sync::mpsc::Sender<std::io::Result<SocketAddr>>,
) {
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            let _ = addr_tx.send(Err(e));
            return;
        }
    };
    let _ = addr_tx.send(listener.local_addr());
    loop {
        tokio::select! {
            _ = &mut shutdown_rx => return,
            res = listener.accept() => {
                let Ok((client, _)) = res else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let mut reset_rx = reset_rx.clone();
                let gen = *reset_rx.borrow_and_update();
                shared.live.lock().unwrap().insert(id, gen);
                let guard = LiveGuard { shared: shared.clone(), id };
                let mode_rx = mode_rx.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    handle(client, target, mode_rx, reset_rx).await;
                });
            }
        }
    }
}

struct LiveGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.shared.live.lock().unwrap().remove(&self.id);
    }
}

/// SO_LINGER 0 (so close sends a RST; with a zero timeout close never blocks).
#[allow(deprecated)]
fn rst_close(s: &TcpStream) {
    let _ = s.set_linger(Some(Duration::ZERO));
}

enum Outcome {
    Done,
    Error,
    Reset,
}

async fn handle(
    client: TcpStream,
    target: SocketAddr,
    mut mode_rx: watch::Receiver<Mode>,
    mut reset_rx: watch::Receiver<u64>,
) {
    // New connection: Refuse -> RST; Blackhole -> hold until the mode changes.
    loop {
        let mode = *mode_rx.borrow_and_update();
        match mode {
            Mode::Pass => break,
            Mode::Refuse => {
                rst_close(&client);
                return;
            }
            Mode::Blackhole => {
                tokio::select! {
                    r = mode_rx.changed() => if r.is_err() { return },
                    _ = reset_rx.changed() => { rst_close(&client); return; }
                }
            }
        }
    }
    let server = tokio::select! {
        r = TcpStream::connect(target) => r,
        _ = reset_rx.changed() => { rst_close(&client); return; }
    };
    let server = match server {
        Ok(s) => s,
        Err(_) => {
            rst_close(&client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let outcome = {
        let up = pump(&mut cr, &mut sw, mode_rx.clone());
        let down = pump(&mut sr, &mut cw, mode_rx.clone());
        tokio::select! {
            r = async { tokio::try_join!(up, down) } => {
                if r.is_ok() { Outcome::Done } else { Outcome::Error }
            }
            _ = reset_rx.changed() => Outcome::Reset,
        }
    };
    match outcome {
        Outcome::Done => {}
        Outcome::Error | Outcome::Reset => {
            rst_close(cr.as_ref());
            rst_close(sr.as_ref());
        }
    }
}

/// Copies `r` to `w` while the mode isn't Blackhole; on EOF forwards the half-close.
async fn pump(
    r: &mut OwnedReadHalf,
    w: &mut OwnedWriteHalf,
    mut mode_rx: watch::Receiver<Mode>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        wait_not_blackhole(&mut mode_rx).await;
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        wait_not_blackhole(&mut mode_rx).await;
        w.write_all(&buf[..n]).await?;
    }
}

async fn wait_not_blackhole(mode_rx: &mut watch::Receiver<Mode>) {
    // If the sender is gone the relay is shutting down; the task is about to be dropped.
    if mode_rx.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
        std::future::pending::<()>().await;
    }
}
