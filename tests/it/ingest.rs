//! Ingest beyond HTTP: UDP datagrams from a test socket, and a real RabbitMQ
//! broker (the machine's, at 127.0.0.1:5672, guest/guest; every test uses its own
//! queues and exchanges and deletes them).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_gateway::config::{AmqpBody, Config, Secret};
use tokio::net::UdpSocket;

use crate::support::binary::GatewayProcess;
use crate::support::proxy::ChaosProxy;
use crate::support::server::{SECRET, patterns, token_with};
use crate::support::{SseStream, TestServer, test_config, within};

const RABBITMQ: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

// ---- UDP -----------------------------------------------------------------------

fn udp_config(adjust: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config();
    config.ingest.udp.enabled = true;
    config.ingest.udp.addr = SocketAddr::from(([127, 0, 0, 1], 0));
    adjust(&mut config);
    config
}

async fn sender(server: &TestServer) -> (UdpSocket, SocketAddr) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (socket, server.udp_addr.expect("UDP ingest enabled"))
}

/// Sends `body` until `stream` delivers an event whose data is `expect` (UDP may
/// drop), bounded.
async fn send_until_received(socket: &UdpSocket, to: SocketAddr, body: &Value, stream: &mut SseStream, expect: &str) {
    let payload = body.to_string();
    within("the datagram's event", async {
        loop {
            socket.send_to(payload.as_bytes(), to).await.unwrap();
            if let Ok(event) = tokio::time::timeout(Duration::from_millis(500), stream.next_event()).await
                && event.data == expect
            {
                assert!(event.id.is_some(), "an ingested event has an id");
                return;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn datagrams_reach_subscribers_singly_and_in_batches() {
    let server = TestServer::start(udp_config(|_| {})).await;
    let mut stream = server.subscribe(&["udp.*"], None).await;
    let (socket, to) = sender(&server).await;
    send_until_received(
        &socket,
        to,
        &json!({"stream": "udp.a", "data": "one"}),
        &mut stream,
        "one",
    )
    .await;
    let batch = json!([{"stream": "udp.a", "data": "two"}, {"stream": "udp.b", "event": "t", "data": {"n": 3}}]);
    socket.send_to(batch.to_string().as_bytes(), to).await.unwrap();
    let events = stream.events(2).await;
    assert_eq!(events[0].data, "two");
    assert_eq!((events[1].event.as_str(), events[1].data.as_str()), ("t", r#"{"n":3}"#));
    assert!(server.metric(r#"sse_events_published_total{source="udp"}"#).await >= 3.0);
}

#[tokio::test]
async fn invalid_datagrams_are_dropped_and_counted_by_reason() {
    let server = TestServer::start(udp_config(|config| {
        config.ingest.udp.allowed_streams = patterns(&["ok.*"]);
        config.limits.max_body_bytes = 4096;
        config.limits.max_event_bytes = 1024;
        config.limits.max_body_bytes_in_flight = 4096;
    }))
    .await;
    let mut stream = server.subscribe(&["*"], None).await;
    let (socket, to) = sender(&server).await;
    let reasons = [
        ("invalid_request", "not json".to_owned()),
        (
            "invalid_stream_name",
            json!({"stream": "no spaces", "data": 1}).to_string(),
        ),
        (
            "invalid_event_type",
            json!({"stream": "ok.a", "event": "gap", "data": 1}).to_string(),
        ),
        (
            "stream_not_permitted",
            json!({"stream": "elsewhere", "data": 1}).to_string(),
        ),
        ("payload_too_large", "x".repeat(5000)),
        (
            "payload_too_large",
            json!({"stream": "ok.a", "data": "y".repeat(2000)}).to_string(),
        ),
    ];
    let counter = |reason: &str| format!(r#"sse_ingest_rejected_total{{source="udp",reason="{reason}"}}"#);
    let mut before = Vec::new();
    for (reason, _) in &reasons {
        before.push(server.metric(&counter(reason)).await);
    }
    // Each invalid datagram until its reason is counted (UDP may drop), then a valid one.
    for ((reason, datagram), before) in reasons.iter().zip(before) {
        within(reason, async {
            while server.metric(&counter(reason)).await <= before {
                socket.send_to(datagram.as_bytes(), to).await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    send_until_received(
        &socket,
        to,
        &json!({"stream": "ok.a", "data": "valid"}),
        &mut stream,
        "valid",
    )
    .await;
}

#[tokio::test]
async fn a_flood_of_garbage_does_not_keep_valid_datagrams_out() {
    let server = TestServer::start(udp_config(|_| {})).await;
    let mut stream = server.subscribe(&["flood.ok"], None).await;
    let to = server.udp_addr.unwrap();
    let flood = tokio::spawn(async move {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let garbage = b"{\"stream\":".repeat(100);
        for _ in 0..50_000 {
            let _ = socket.send_to(&garbage, to).await;
        }
    });
    let (socket, to) = sender(&server).await;
    send_until_received(
        &socket,
        to,
        &json!({"stream": "flood.ok", "data": "through"}),
        &mut stream,
        "through",
    )
    .await;
    flood.await.unwrap();
    send_until_received(
        &socket,
        to,
        &json!({"stream": "flood.ok", "data": "after"}),
        &mut stream,
        "after",
    )
    .await;
    assert!(
        server
            .metric(r#"sse_ingest_rejected_total{source="udp",reason="invalid_request"}"#)
            .await
            >= 1.0
    );
}

// ---- AMQP ----------------------------------------------------------------------

async fn amqp_channel() -> (Connection, Channel) {
    let connection = Connection::connect(RABBITMQ, ConnectionProperties::default())
        .await
        .expect("RabbitMQ at 127.0.0.1:5672 (guest/guest)");
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(name.into(), options, arguments).await.unwrap();
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) {
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Deletes what a test declared and closes its connection.
async fn clean_up(connection: Connection, channel: &Channel, queues: &[&str], exchanges: &[&str]) {
    for queue in queues {
        channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
    for exchange in exchanges {
        channel
            .exchange_delete((*exchange).into(), ExchangeDeleteOptions::default())
            .await
            .unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
}

async fn send(channel: &Channel, queue: &str, body: &[u8], message_id: Option<&str>) {
    let mut properties = BasicProperties::default();
    if let Some(id) = message_id {
        properties = properties.with_message_id(id.into());
    }
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

fn amqp_config(url: &str, queue: &str) -> Config {
    let mut config = test_config();
    config.ingest.amqp.enabled = true;
    config.ingest.amqp.url = Secret::new(url);
    config.ingest.amqp.queue = queue.to_owned();
    config.ingest.amqp.reconnect_min = Duration::from_millis(100);
    config.ingest.amqp.reconnect_max = Duration::from_millis(500);
    config
}

async fn wait_ready(server: &TestServer, expected: StatusCode) -> Value {
    within("readiness", async {
        loop {
            let response = server.http.get(server.url("/readyz")).send().await.unwrap();
            if response.status() == expected {
                return response.json().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_amqp_message_reaches_subscribers_with_an_id() {
    let queue = unique("sse-it-json");
    let (connection, channel) = amqp_channel().await;
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let server = TestServer::start(amqp_config(RABBITMQ, &queue)).await;
    wait_ready(&server, StatusCode::OK).await;
    let mut stream = server.subscribe(&["amqp.a"], None).await;
    send(
        &channel,
        &queue,
        br#"{"stream":"amqp.a","event":"note","data":{"x":1}}"#,
        None,
    )
    .await;
    let event = stream.next_event().await;
    assert!(event.id.is_some());
    assert_eq!((event.event.as_str(), event.data.as_str()), ("note", r#"{"x":1}"#));
    assert!(server.metric(r#"sse_events_published_total{source="amqp"}"#).await >= 1.0);
    clean_up(connection, &channel, &[&queue], &[]).await;
}

#[tokio::test]
async fn raw_messages_take_their_stream_from_the_routing_key_through_a_declared_binding() {
    let queue = unique("sse-it-raw");
    let exchange = unique("sse-it-topic");
    let (connection, channel) = amqp_channel().await;
    declare_exchange(&channel, &exchange, ExchangeKind::Topic).await;
    let mut config = amqp_config(RABBITMQ, &queue);
    config.ingest.amqp.declare = true;
    config.ingest.amqp.exchange = exchange.clone();
    config.ingest.amqp.routing_key = "prices.#".to_owned();
    config.ingest.amqp.body = AmqpBody::Raw;
    let server = TestServer::start(config).await;
    wait_ready(&server, StatusCode::OK).await;
    let mut stream = server.subscribe(&["prices.*"], None).await;
    let properties = BasicProperties::default().with_type("tick".into());
    channel
        .basic_publish(
            exchange.as_str().into(),
            "prices.eur".into(),
            BasicPublishOptions::default(),
            b"1.0842",
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let event = stream.next_event().await;
    assert_eq!((event.event.as_str(), event.data.as_str()), ("tick", "1.0842"));
    clean_up(connection, &channel, &[&queue], &[&exchange]).await;
}

#[tokio::test]
async fn an_invalid_message_is_dead_lettered_and_the_next_one_goes_through() {
    let queue = unique("sse-it-dlx");
    let dead_exchange = unique("sse-it-dead");
    let dead_queue = unique("sse-it-dead-q");
    let (connection, channel) = amqp_channel().await;
    declare_exchange(&channel, &dead_exchange, ExchangeKind::Fanout).await;
    declare_queue(&channel, &dead_queue, FieldTable::default()).await;
    channel
        .queue_bind(
            dead_queue.as_str().into(),
            dead_exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead_exchange.as_str().into()),
    );
    declare_queue(&channel, &queue, arguments).await;
    let server = TestServer::start(amqp_config(RABBITMQ, &queue)).await;
    wait_ready(&server, StatusCode::OK).await;
    let mut stream = server.subscribe(&["amqp.dlx"], None).await;
    send(&channel, &queue, b"{not json", Some("bad-1")).await;
    send(
        &channel,
        &queue,
        br#"{"stream":"amqp.dlx","data":"fine"}"#,
        Some("good-1"),
    )
    .await;
    assert_eq!(stream.next_event().await.data, "fine");
    let dead = within("the dead letter", async {
        loop {
            if let Some(message) = channel
                .basic_get(dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return message;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(dead.delivery.data, b"{not json");
    assert!(
        server
            .metric(r#"sse_ingest_rejected_total{source="amqp",reason="invalid_request"}"#)
            .await
            >= 1.0
    );
    clean_up(connection, &channel, &[&queue, &dead_queue], &[&dead_exchange]).await;
}

#[tokio::test]
async fn readiness_follows_the_broker_and_consumption_resumes_by_itself() {
    let queue = unique("sse-it-ready");
    let (connection, channel) = amqp_channel().await;
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let proxy = ChaosProxy::start(SocketAddr::from(([127, 0, 0, 1], 5672))).await;
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr);
    let server = TestServer::start(amqp_config(&url, &queue)).await;
    wait_ready(&server, StatusCode::OK).await;
    let mut stream = server.subscribe(&["amqp.back"], None).await;

    proxy.cut(true);
    let body = wait_ready(&server, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body["status"], "amqp_unavailable");
    // Published while the gateway is cut off: waits in the queue.
    send(
        &channel,
        &queue,
        br#"{"stream":"amqp.back","data":"while away"}"#,
        Some("away-1"),
    )
    .await;
    proxy.unblock();
    wait_ready(&server, StatusCode::OK).await;
    assert_eq!(stream.next_event().await.data, "while away");
    assert!(server.metric(r#"sse_ingest_reconnects_total{source="amqp"}"#).await >= 1.0);
    clean_up(connection, &channel, &[&queue], &[]).await;
}

#[tokio::test]
async fn kill_9_before_the_ack_loses_nothing_and_repeats_nothing() {
    const MESSAGES: usize = 2000;
    let queue = unique("sse-it-kill");
    let (connection, channel) = amqp_channel().await;
    declare_queue(&channel, &queue, FieldTable::default()).await;
    for n in 0..MESSAGES {
        let body = json!({"stream": "amqp.kill", "data": n}).to_string();
        send(&channel, &queue, body.as_bytes(), Some(&format!("m-{n}"))).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let envs = [
        ("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET),
        ("SSE_GATEWAY_BACKEND__KIND", "disk"),
        ("SSE_GATEWAY_BACKEND__DISK__PATH", data.as_str()),
        ("SSE_GATEWAY_DEMO__PUBLISHER", "false"),
        ("SSE_GATEWAY_STREAMS__BUFFER_SIZE", "5000"),
        ("SSE_GATEWAY_INGEST__AMQP__ENABLED", "true"),
        ("SSE_GATEWAY_INGEST__AMQP__URL", RABBITMQ),
        ("SSE_GATEWAY_INGEST__AMQP__QUEUE", queue.as_str()),
        ("SSE_GATEWAY_INGEST__AMQP__PREFETCH", "200"),
    ];
    let token = token_with(|claims| claims.subscribe = patterns(&["*"]));
    let http = reqwest::Client::new();
    let open = |addr: String, last: Option<String>| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let mut request = http
                .get(format!("http://{addr}/events?stream=amqp.kill"))
                .bearer_auth(token);
            if let Some(last) = last {
                request = request.header("Last-Event-ID", last);
            }
            SseStream::new(request.send().await.unwrap())
        }
    };

    let mut first = GatewayProcess::serve(dir.path(), &envs).await;
    let mut stream = open(first.addr.clone(), None).await;
    let mut seen = Vec::new();
    // Kill -9 while messages are delivered but not yet acked.
    while seen.len() < 100 {
        seen.push(stream.next_event().await);
    }
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    seen.extend(stream.until_end().await);
    let last_id = seen.last().unwrap().id.clone().unwrap();

    let second = GatewayProcess::serve(dir.path(), &envs).await;
    let mut resumed = open(second.addr.clone(), Some(last_id)).await;
    let rest = resumed.events(MESSAGES - seen.len()).await;
    assert!(
        rest.iter().all(|event| event.event == "message"),
        "no gap notice: {rest:?}"
    );
    let payloads: Vec<usize> = seen.iter().chain(&rest).map(|e| e.data.parse().unwrap()).collect();
    let distinct: BTreeSet<usize> = payloads.iter().copied().collect();
    assert_eq!(distinct.len(), payloads.len(), "a message was published twice");
    assert_eq!(distinct, (0..MESSAGES).collect(), "every message once");
    drop(second);
    clean_up(connection, &channel, &[&queue], &[]).await;
}
