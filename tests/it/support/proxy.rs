//! A TCP proxy on port 0 whose connections can be cut, which can refuse new ones
//! for a while, and which can hold back what Redis sends to pub/sub connections
//! (those that sent a SUBSCRIBE): the way tests drop a client's connection, or make
//! a node's live feed lag behind, without stopping the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct ChaosProxy {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    /// (hold what pub/sub connections receive, hold what every connection receives)
    paused: watch::Sender<(bool, bool)>,
    accept: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0_u64);
        let (paused, _) = watch::channel((false, false));
        let accept = tokio::spawn(accept_loop(
            listener,
            target,
            blocked.clone(),
            generation.clone(),
            paused.clone(),
        ));
        Self {
            addr,
            blocked,
            generation,
            paused,
            accept,
        }
    }

    /// Closes every open connection; with `block`, also refuses new ones until
    /// [`ChaosProxy::unblock`].
    pub fn cut(&self, block: bool) {
        self.blocked.store(block, Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }

    pub fn unblock(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }

    /// Holds back (without losing) what the server sends on pub/sub connections
    /// until called again with `false`.
    pub fn pause_subscriptions(&self, pause: bool) {
        self.paused.send_modify(|(subscriptions, _)| *subscriptions = pause);
    }

    /// Holds back what the server sends on every connection (a replication link
    /// that stops advancing) until called again with `false`, or until a cut
    /// discards it.
    pub fn hold(&self, hold: bool) {
        self.paused.send_modify(|(_, all)| *all = hold);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    blocked: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    paused: watch::Sender<(bool, bool)>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if blocked.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut = generation.subscribe();
        let paused = paused.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            let is_pubsub = Arc::new(AtomicBool::new(false));
            tokio::select! {
                () = upstream(client_read, server_write, is_pubsub.clone()) => {}
                () = downstream(server_read, client_write, is_pubsub, paused) => {}
                _ = cut.changed() => {}
            }
        });
    }
}

/// Client to server, noticing a SUBSCRIBE.
async fn upstream(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, is_pubsub: Arc<AtomicBool>) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let chunk = &buffer[..read];
        if chunk.windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
            is_pubsub.store(true, Ordering::SeqCst);
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Server to client, held back while paused on pub/sub connections.
async fn downstream(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    is_pubsub: Arc<AtomicBool>,
    mut paused: watch::Receiver<(bool, bool)>,
) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let pubsub = is_pubsub.load(Ordering::SeqCst);
        if paused
            .wait_for(|(subscriptions, all)| !(*all || pubsub && *subscriptions))
            .await
            .is_err()
        {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
