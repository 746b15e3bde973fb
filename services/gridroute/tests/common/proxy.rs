//! A TCP proxy between gridroute and Redis that injects network faults: latency, a black hole
//! (nothing gets through, connections stay open, as in a partition; what was held is delivered
//! when it heals, as TCP retransmission would), half-open connections (requests reach Redis,
//! answers do not come back), and connections reset mid-stream (RST).

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// What the network does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass.
    Pass,
    /// Every chunk waits this long in each direction.
    Latency(Duration),
    /// Nothing passes either way; held until the mode changes.
    BlackHole,
    /// Client to server passes; server to client is held until the mode changes.
    HalfOpen,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<watch::Sender<Mode>>,
    resets: Arc<watch::Sender<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Proxies a local port to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(watch::channel(Mode::Pass).0);
        let resets = Arc::new(watch::channel(0u64).0);
        let (m, r) = (mode.clone(), resets.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                tokio::spawn(pair(client, server, m.subscribe(), r.subscribe()));
            }
        });
        Self {
            port,
            mode,
            resets,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Resets every open connection (RST to both ends).
    pub fn reset_all(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pair(
    client: TcpStream,
    server: TcpStream,
    mode: watch::Receiver<Mode>,
    mut resets: watch::Receiver<u64>,
) {
    resets.mark_unchanged();
    for s in [&client, &server] {
        // A drop then sends RST, not FIN: a connection reset mid-pipeline.
        #[allow(deprecated)]
        let _ = s.set_linger(Some(Duration::ZERO));
    }
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone(), false);
    let down = pump(sr, cw, mode, true);
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = resets.changed() => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    answers: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Pass => break,
                Mode::Latency(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Mode::HalfOpen if !answers => break,
                Mode::BlackHole | Mode::HalfOpen => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
