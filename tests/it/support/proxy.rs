//! A TCP proxy on port 0 whose connections can be cut, and which can refuse new
//! ones for a while: the way tests drop a client's connection without stopping
//! the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct ChaosProxy {
    pub addr: SocketAddr,
    blocked: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let blocked = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0_u64);
        let accept = tokio::spawn(accept_loop(listener, target, blocked.clone(), generation.clone()));
        Self {
            addr,
            blocked,
            generation,
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
) {
    while let Ok((client, _)) = listener.accept().await {
        if blocked.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut = generation.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
