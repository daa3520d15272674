//! Nodes without HTTP, for the backend conformance suite: a [`Deployment`] is one
//! backend (memory, or a real `redis-server` with its own key prefix) that makes
//! nodes through the production `Node::start`; helpers publish and subscribe
//! through the node's one publish path and one subscribe path.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sse_gateway::broker::Position;
use sse_gateway::config::{BackendKind, Config, Secret};
use sse_gateway::event::{EventId, NewEvent};
use sse_gateway::history::Resume;
use sse_gateway::node::{Allowed, Node, Publication, PublishError, Publisher, Source, SubscribeRequest};
use sse_gateway::stream::StreamName;
use sse_gateway::stream::StreamPattern;
use tokio_util::sync::CancellationToken;

use super::redis::RedisServer;
use super::{SseStream, test_config, within};

/// Where a deployment keeps its history.
pub enum Backing {
    Memory,
    /// Kept for its lifetime: the data directory is inside.
    Disk(#[expect(dead_code, reason = "held so the directory outlives the deployment")] tempfile::TempDir),
    Redis(RedisServer),
}

/// One backend, and the configuration its nodes start with.
pub struct Deployment {
    pub config: Config,
    backing: Backing,
}

impl Deployment {
    pub fn memory(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        Self {
            config,
            backing: Backing::Memory,
        }
    }

    pub async fn disk(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = test_config();
        config.backend.kind = BackendKind::Disk;
        config.backend.disk.path = dir.path().join("data");
        adjust(&mut config);
        Self {
            config,
            backing: Backing::Disk(dir),
        }
    }

    pub async fn redis(adjust: impl FnOnce(&mut Config)) -> Self {
        let redis = RedisServer::start().await;
        let mut config = test_config();
        config.backend.kind = BackendKind::Redis;
        config.backend.redis.url = Secret::new(redis.url());
        config.backend.redis.key_prefix = "conformance:".to_owned();
        config.backend.redis.health_interval = Duration::from_millis(100);
        config.backend.redis.response_timeout = Duration::from_millis(500);
        config.backend.redis.connect_timeout = Duration::from_millis(500);
        adjust(&mut config);
        Self {
            config,
            backing: Backing::Redis(redis),
        }
    }

    /// A new node on this backend, ready. With memory every node has its own history
    /// (a second node is the first one restarted); with disk the previous node must
    /// be closed first (one process per data directory); with Redis they share it.
    pub async fn node(&self) -> Arc<Node> {
        let node = Node::start(&self.config, Default::default()).expect("node starts");
        within("the node to be ready", async {
            while !node.broker_is_ready() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        node
    }

    /// Waits until `stream` holds nothing any more (its history expired); on Redis,
    /// until its history key was reclaimed as well.
    pub async fn wait_until_reclaimed(&self, node: &Node, stream: &str) {
        within("the history to expire and be reclaimed", async {
            loop {
                let held = position(node, stream).await.buffered;
                let reclaimed = match &self.backing {
                    Backing::Redis(redis) => {
                        let key = format!("{}s:{stream}", self.config.backend.redis.key_prefix);
                        redis.cli(&["EXISTS", &key]) == "0"
                    }
                    _ => true,
                };
                if held == 0 && reclaimed {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// Whether history survives every node stopping.
    pub fn is_durable(&self) -> bool {
        !matches!(self.backing, Backing::Memory)
    }

    /// Whether nodes started from this deployment share one history.
    pub fn is_shared(&self) -> bool {
        matches!(self.backing, Backing::Redis(_))
    }

    /// Whether the node holds history in its own process (bounded by
    /// `streams.max_history_bytes`).
    pub fn holds_history_in_process(&self) -> bool {
        !matches!(self.backing, Backing::Redis(_))
    }

    /// Makes the backend lose every event it holds, and returns the node to go on
    /// with: memory restarts; disk restarts on an emptied data directory; Redis
    /// is flushed under the running node.
    pub async fn lose_history(&self, node: Arc<Node>) -> Arc<Node> {
        match &self.backing {
            Backing::Memory => {
                drop(node);
                self.node().await
            }
            Backing::Disk(_) => {
                node.close().await;
                drop(node);
                std::fs::remove_dir_all(&self.config.backend.disk.path).expect("remove the data directory");
                self.node().await
            }
            Backing::Redis(redis) => {
                assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
                node
            }
        }
    }
}

fn name(stream: &str) -> StreamName {
    StreamName::try_new(stream).expect("valid stream name")
}

fn event(stream: &str, data: &str) -> NewEvent {
    NewEvent::text(name(stream), None, data)
}

/// Publishes `events` (stream, data) as one batch through the node.
pub async fn try_publish(node: &Node, events: &[(&str, &str)]) -> Result<Vec<EventId>, PublishError> {
    node.publish(Publication {
        publisher: Publisher {
            subject: "conformance",
            source: Source::Http,
            allowed: Allowed::Any,
        },
        events: events.iter().map(|(stream, data)| event(stream, data)).collect(),
        idempotency: None,
    })
    .await
}

/// Publishes one event and returns its id as the client sees it.
pub async fn publish(node: &Node, stream: &str, data: &str) -> String {
    let ids = try_publish(node, &[(stream, data)]).await.expect("publish");
    ids[0].to_string()
}

/// Publishes `events` as one batch through the node.
pub async fn publish_events(node: &Node, events: Vec<NewEvent>) -> Vec<EventId> {
    node.publish(Publication {
        publisher: Publisher {
            subject: "conformance",
            source: Source::Http,
            allowed: Allowed::Any,
        },
        events,
        idempotency: None,
    })
    .await
    .expect("publish")
}

/// What a subscription asks for besides its streams.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options<'a> {
    pub last_event_id: Option<&'a str>,
    pub latest: bool,
    pub envelope: bool,
}

/// Subscribes through the node to names and patterns, resuming from
/// `last_event_id` as a client would send it, and reads the subscription's bytes
/// as SSE.
pub async fn subscribe(node: &Node, streams: &[&str], last_event_id: Option<&str>) -> SseStream {
    subscribe_with(
        node,
        streams,
        Options {
            last_event_id,
            ..Options::default()
        },
    )
    .await
}

/// [`subscribe`] with every option.
pub async fn subscribe_with(node: &Node, streams: &[&str], options: Options<'_>) -> SseStream {
    let any = [StreamPattern::Any];
    let resume = options
        .last_event_id
        .map(|id| id.parse().map_or(Resume::Unrecognised, Resume::After));
    let subscription = node
        .subscribe(SubscribeRequest {
            subject: "conformance",
            allowed: &any,
            streams: streams
                .iter()
                .map(|stream| StreamPattern::try_new(stream).expect("valid stream pattern"))
                .collect(),
            resume,
            latest: options.latest,
            envelope: options.envelope,
            token: None,
            close_at: None,
            close_connection: CancellationToken::new(),
            direct: None,
        })
        .await
        .expect("subscribe");
    let chunks = futures::stream::unfold(subscription, |mut subscription| async move {
        let chunk = subscription.next_chunk().await?;
        Some((Ok(chunk), subscription))
    });
    SseStream::from_chunks(Default::default(), chunks.boxed())
}

/// Where `stream` stands, through the node.
pub async fn position(node: &Node, stream: &str) -> Position {
    node.position(&[StreamPattern::Any], &name(stream))
        .await
        .expect("position")
}
