//! A Redis deployment under Sentinel, with real processes on free ports: a master,
//! replicas, and three `redis-sentinel` processes watching it with short timeouts.
//! Killed with the test.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::within;

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `redis-server` (master or replica) of the deployment.
pub struct Member {
    pub port: u16,
    process: Option<Child>,
}

impl Member {
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().expect("running").id()
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.process.is_some() {
            self.signal("-CONT");
        }
        self.kill();
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    // Bounded, as in `RedisServer::cli`: a frozen server must not hang the test.
    let output = Command::new("timeout")
        .args(["10", "redis-cli", "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli is installed");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn wait_for_port(port: u16) {
    within("a Redis process to accept connections", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn spawn_server(port: u16, dir: &std::path::Path, replica_of: Option<u16>) -> Child {
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", &format!("dump-{port}.rdb")]);
    if let Some(master) = replica_of {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed")
}

/// A master, replicas and three sentinels.
pub struct SentinelDeployment {
    pub master_name: String,
    pub members: Vec<Member>,
    pub sentinel_ports: Vec<u16>,
    sentinels: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl SentinelDeployment {
    /// Starts a master with `replicas` replicas and three sentinels watching it;
    /// returns once the replicas are in sync and the sentinels know every one.
    pub async fn start(replicas: usize) -> Self {
        Self::start_with(replicas, None).await
    }

    /// Like [`SentinelDeployment::start`] with one replica replicating through
    /// `link` (a proxy to the master's port, from `link_for(master_port)`), so a test
    /// can hold its replication stream back.
    pub async fn start_with_linked_replica<F, Fut>(link_for: F) -> (Self, super::proxy::ChaosProxy)
    where
        F: FnOnce(u16) -> Fut,
        Fut: std::future::Future<Output = super::proxy::ChaosProxy>,
    {
        let dir = tempfile::tempdir().unwrap();
        let master = free_port();
        let process = spawn_server(master, dir.path(), None);
        wait_for_port(master).await;
        let proxy = link_for(master).await;
        let deployment = Self::start_with(1, Some((dir, master, process, proxy.addr.port()))).await;
        (deployment, proxy)
    }

    async fn start_with(replicas: usize, prepared: Option<(tempfile::TempDir, u16, Child, u16)>) -> Self {
        let (dir, master, process, link) = match prepared {
            Some((dir, master, process, link)) => (dir, master, process, link),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let master = free_port();
                let process = spawn_server(master, dir.path(), None);
                wait_for_port(master).await;
                (dir, master, process, master)
            }
        };
        let mut members = vec![Member {
            port: master,
            process: Some(process),
        }];
        for _ in 0..replicas {
            let port = free_port();
            members.push(Member {
                port,
                process: Some(spawn_server(port, dir.path(), Some(link))),
            });
            wait_for_port(port).await;
        }
        within("the replicas to be in sync", async {
            loop {
                let info = cli(master, &["INFO", "replication"]);
                let online = info.lines().filter(|line| line.contains("state=online")).count();
                // Acknowledging the stream, not only connected.
                let acknowledging = info
                    .lines()
                    .filter(|line| line.contains("state=online") && !line.contains("offset=0,"))
                    .count();
                if online >= replicas && acknowledging >= replicas {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let master_name = "gateway-test".to_owned();
        let mut sentinels = Vec::new();
        let mut sentinel_ports = Vec::new();
        for index in 0..3 {
            let port = free_port();
            let config: PathBuf = dir.path().join(format!("sentinel-{index}.conf"));
            std::fs::write(
                &config,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {master_name} 127.0.0.1 {master} 2\n\
                     sentinel down-after-milliseconds {master_name} 1000\n\
                     sentinel failover-timeout {master_name} 4000\n\
                     sentinel parallel-syncs {master_name} 1\n",
                    dir.path().display()
                ),
            )
            .unwrap();
            let process = Command::new("redis-sentinel")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-sentinel is installed (run the tests with scripts/test)");
            sentinels.push(process);
            sentinel_ports.push(port);
            wait_for_port(port).await;
        }
        let deployment = Self {
            master_name,
            members,
            sentinel_ports,
            sentinels,
            _dir: dir,
        };
        let expected = replicas.to_string();
        within("the sentinels to see every replica", async {
            loop {
                let known = deployment
                    .sentinel_ports
                    .iter()
                    .all(|port| cli(*port, &["SENTINEL", "MASTER", &deployment.master_name]).contains(&expected));
                let replicas_known = deployment.sentinel_ports.iter().all(|port| {
                    let info = cli(*port, &["SENTINEL", "REPLICAS", &deployment.master_name]);
                    info.matches("slave").count() >= replicas
                });
                if known && replicas_known {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        deployment
    }

    /// `host:port` of every sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinel_ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// The port the sentinels name as master now.
    pub fn current_master_port(&self) -> Option<u16> {
        let reply = cli(
            self.sentinel_ports[0],
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
        );
        reply.lines().nth(1)?.trim().parse().ok()
    }

    /// Waits until the sentinels name another master than `old`.
    pub async fn wait_for_failover(&self, old: u16) -> u16 {
        within("the sentinels to fail over", async {
            loop {
                if let Some(port) = self.current_master_port()
                    && port != old
                {
                    return port;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    pub fn member(&mut self, port: u16) -> &mut Member {
        self.members
            .iter_mut()
            .find(|member| member.port == port)
            .expect("a member")
    }
}

impl Drop for SentinelDeployment {
    fn drop(&mut self) {
        for mut sentinel in self.sentinels.drain(..) {
            let _ = sentinel.kill();
            let _ = sentinel.wait();
        }
    }
}
