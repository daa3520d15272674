//! Health, readiness, unknown routes and the ordered shutdown.

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::{TestServer, read_head, within};

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let server = TestServer::start_default().await;
    for path in ["/healthz", "/readyz"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_are_client_errors() {
    let server = TestServer::start_default().await;
    let response = server.http.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "not_found");
    let response = server.http.delete(server.url("/events")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn shutdown_ends_open_streams_refuses_late_publishes_and_returns() {
    let mut server = TestServer::start_default().await;
    let mut stream = server.subscribe(&["a"], None).await;

    // A publish whose body is still to come when shutdown begins. The server sends
    // `100 Continue` once the handler reads the body, so the request is in flight.
    let body = r#"{"stream":"a","data":"late"}"#;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /events HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        server.token(&[], &["*"]),
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    assert!(read_head(&mut socket).await.starts_with("HTTP/1.1 100"));

    server.begin_stop();
    // The open event stream ends (clients reconnect elsewhere with Last-Event-ID).
    within("stream to end", stream.until_end()).await;
    socket.write_all(body.as_bytes()).await.unwrap();
    let response = read_head(&mut socket).await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    drop(socket);

    server.join().await.unwrap();
}

#[tokio::test]
async fn cors_is_closed_unless_origins_are_configured() {
    let closed = TestServer::start_default().await;
    let response = closed
        .http
        .get(closed.url("/healthz"))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("access-control-allow-origin"));

    let mut config = crate::support::test_config();
    config.cors.allowed_origins = vec!["https://app.example".to_owned()];
    config.cors.allow_credentials = true;
    let open = TestServer::start(config).await;
    let preflight = open
        .http
        .request(reqwest::Method::OPTIONS, open.url("/events"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(preflight.headers()["access-control-allow-credentials"], "true");
    let other = open
        .http
        .get(open.url("/healthz"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
