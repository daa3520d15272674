//! A real `redis-server` per test on a free port, so tests never share state with
//! each other or with a Redis already on this machine: without persistence, or
//! persisting to its own temporary directory for tests that restart it from disk.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::within;

pub struct RedisServer {
    pub addr: SocketAddr,
    process: Option<Child>,
    /// Persistence settings and their directory, when the server keeps data.
    persistence: Option<(Vec<String>, tempfile::TempDir)>,
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that persists to its own directory with `settings` (for example
    /// `["--appendonly", "yes", "--appendfsync", "always"]`); nothing is saved
    /// unless the settings or a `SAVE` say so.
    pub async fn start_persistent(settings: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_with(Some((settings.iter().map(|s| (*s).to_owned()).collect(), dir))).await
    }

    async fn start_with(persistence: Option<(Vec<String>, tempfile::TempDir)>) -> Self {
        let port = StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            process: None,
            persistence,
        };
        server.spawn().await;
        server
    }

    /// SIGKILL, then a new server on the same port and directory (it loads what was
    /// persisted).
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some((settings, dir)) = &self.persistence {
            command.arg("--dir").arg(dir.path()).args(settings);
        }
        let process = command
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
        // Bounded: this blocks the test's thread, so a server that never answers
        // must not hang the test past its own timeouts.
        let output = Command::new("timeout")
            .args([
                "10",
                "redis-cli",
                "-h",
                "127.0.0.1",
                "-p",
                &self.addr.port().to_string(),
            ])
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
