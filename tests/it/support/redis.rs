//! A real `redis-server` per test on a free port, with no persistence, so tests
//! never share state with each other or with a Redis already on this machine.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::within;

pub struct RedisServer {
    pub addr: SocketAddr,
    process: Option<Child>,
}

impl RedisServer {
    pub async fn start() -> Self {
        let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            process: None,
        };
        server.spawn().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    async fn spawn(&mut self) {
        let process = Command::new("redis-server")
            .args(["--port", &self.addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (run the tests with scripts/test)");
        self.process = Some(process);
        let addr = self.addr;
        within("redis-server to accept connections", async move {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Kills the server (its data is gone) and starts an empty one on the same port.
    pub async fn restart_empty(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Runs a command with `redis-cli`.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.addr.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.process.is_some() {
            self.thaw();
        }
        self.kill();
    }
}
