//! The real `sse-gateway` binary as a child process, for tests that need a process
//! to signal or kill. Its address is read from the "listening" log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tokio::sync::mpsc;

use super::within;

pub const BIN: &str = env!("CARGO_BIN_EXE_sse-gateway");

/// A running gateway process; killed on drop.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: String,
    /// Everything logged so far (stdout), and the channel that carries the rest.
    pub log: String,
    pub lines: mpsc::UnboundedReceiver<String>,
}

impl GatewayProcess {
    /// Runs `sse-gateway serve` in `dir` with `envs` (on 127.0.0.1:0) and waits
    /// for it to listen.
    pub async fn serve(dir: &Path, envs: &[(&str, &str)]) -> Self {
        Self::serve_with(Path::new(BIN), dir, envs).await
    }

    /// Like [`GatewayProcess::serve`], started through `program` (a wrapper that
    /// runs the gateway with its arguments).
    pub async fn serve_with(program: &Path, dir: &Path, envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(program);
        command
            .current_dir(dir)
            .env("SSE_GATEWAY_SERVER__ADDR", "127.0.0.1:0")
            .env_remove("SSE_GATEWAY_AUTH__HS256_SECRET")
            .env("RUST_LOG", "debug")
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, mut lines) = mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut log = String::new();
        let addr = within("the listening line", async {
            loop {
                let line = lines.recv().await.expect("gateway exited early");
                log.push_str(&line);
                log.push('\n');
                if line.contains("sse-gateway listening")
                    && let Some(rest) = line.split("addr=").nth(1)
                {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
        })
        .await;
        Self {
            child,
            addr,
            log,
            lines,
        }
    }

    /// The text of its `/metrics`.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Reads the remaining log after the process exited.
    pub async fn drain_log(&mut self) {
        while let Some(line) = self.lines.recv().await {
            self.log.push_str(&line);
            self.log.push('\n');
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
