//! Over HTTP: prefix subscriptions and the firehose (coverage by the token, limits),
//! envelopes, `replay=latest`, and `GET /streams/NAME` (snapshot-then-subscribe).
//! The delivery guarantees of each on every backend are in `conformance.rs`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::server::token_with;
use crate::support::{TestServer, test_config, within};

async fn error_of(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_subscription_pattern_must_be_covered_by_a_token_pattern() {
    let server = TestServer::start_default().await;
    let cases = [
        (&["*"][..], "*", StatusCode::OK),
        (&["*"], "a.*", StatusCode::OK),
        (&["a.*"], "a.*", StatusCode::OK),
        (&["a.*"], "a.b.*", StatusCode::OK),
        (&["a.*"], "a.b", StatusCode::OK),
        (&["a.b.*"], "a.*", StatusCode::FORBIDDEN),
        (&["a.*"], "*", StatusCode::FORBIDDEN),
        (&["a.b"], "a.b*", StatusCode::FORBIDDEN),
        (&["a.b", "a.c"], "a.*", StatusCode::FORBIDDEN),
    ];
    for (granted, wanted, expected) in cases {
        let token = server.token(granted, &[]);
        let response = server.get_events(&[wanted], &token).await;
        assert_eq!(response.status(), expected, "{granted:?} subscribing to {wanted}");
        if expected == StatusCode::FORBIDDEN {
            assert_eq!(error_of(response).await.1, "stream_not_permitted");
        }
    }
}

#[tokio::test]
async fn malformed_patterns_are_bad_requests() {
    let server = TestServer::start_default().await;
    let token = server.token(&["*"], &[]);
    for bad in ["a*b", "*a", "**", "a.**", "a%20b*"] {
        let response = server.get_events(&[bad], &token).await;
        assert_eq!(
            error_of(response).await,
            (StatusCode::BAD_REQUEST, "invalid_stream_name".to_owned()),
            "{bad}"
        );
    }
    let url = format!("{}&envelope=yes", server.events_url(&["a"]));
    let response = server.http.get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
    let url = format!("{}&replay=everything", server.events_url(&["a"]));
    let response = server.http.get(url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        error_of(response).await,
        (StatusCode::BAD_REQUEST, "invalid_request".to_owned())
    );
}

#[tokio::test]
async fn a_pattern_counts_as_one_stream_toward_the_limits() {
    let mut config = test_config();
    config.limits.max_streams_per_connection = 2;
    let server = TestServer::start(config).await;
    let token = server.token(&["*"], &[]);
    assert_eq!(
        server.get_events(&["a.*", "b.*"], &token).await.status(),
        StatusCode::OK
    );
    let (status, reason) = error_of(server.get_events(&["a.*", "b.*", "c"], &token).await).await;
    assert_eq!((status, reason.as_str()), (StatusCode::BAD_REQUEST, "too_many_streams"));
}

#[tokio::test]
async fn the_firehose_can_be_limited_per_subject_or_turned_off() {
    let mut config = test_config();
    config.limits.max_firehose_per_subject = 1;
    let server = TestServer::start(config).await;
    let token = token_with(|claims| {
        claims.sub = Some("firehose-user".to_owned());
        claims.subscribe = crate::support::server::patterns(&["*"]);
    });
    let first = server.get_events(&["*"], &token).await;
    assert_eq!(first.status(), StatusCode::OK);
    let (status, reason) = error_of(server.get_events(&["*"], &token).await).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "subject_firehose_limit")
    );
    assert_eq!(
        server.get_events(&["a.*"], &token).await.status(),
        StatusCode::OK,
        "prefixes are not the firehose"
    );
    drop(first);
    let mut config = test_config();
    config.limits.firehose = false;
    let closed = TestServer::start(config).await;
    let (status, reason) = error_of(closed.get_events(&["*"], &token).await).await;
    assert_eq!((status, reason.as_str()), (StatusCode::FORBIDDEN, "firehose_disabled"));
    assert_eq!(closed.get_events(&["a.*"], &token).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn envelopes_over_http_wrap_what_was_published() {
    let server = TestServer::start_default().await;
    let url = format!("{}&envelope=1", server.events_url(&["orders.*", "prices"]));
    let mut stream = server.open_url(&url, None).await;
    let first = server
        .publish("orders.eu", Some("created"), json!({"id": 7, "total": 12.50}))
        .await;
    let second = server.publish("prices", None, json!("EUR 1.08")).await;
    let events = stream.events(2).await;
    assert_eq!(events[0].id.as_deref(), Some(first.as_str()));
    assert_eq!(events[0].event, "created");
    let data: Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(
        data,
        json!({"stream": "orders.eu", "event": "created", "data": {"id": 7, "total": 12.50}})
    );
    assert_eq!(events[1].id.as_deref(), Some(second.as_str()));
    let data: Value = serde_json::from_str(&events[1].data).unwrap();
    assert_eq!(data, json!({"stream": "prices", "data": "EUR 1.08"}));
    // Without envelope=1 the same events arrive exactly as published.
    let mut plain = server.subscribe(&["orders.*"], Some(&second)).await;
    let live = server.publish("orders.us", None, json!([1, 2])).await;
    let event = plain.next_event().await;
    assert_eq!(
        (event.id.as_deref(), event.data.as_str()),
        (Some(live.as_str()), "[1,2]")
    );
}

#[tokio::test]
async fn latest_on_connect_over_http() {
    let server = TestServer::start_default().await;
    server.publish("health.db", None, json!("down")).await;
    let up = server.publish("health.db", None, json!("up")).await;
    let web = server.publish("health.web", None, json!("up")).await;
    let url = format!("{}&replay=latest", server.events_url(&["health.*"]));
    let mut stream = server.open_url(&url, None).await;
    let events = stream.events(2).await;
    let ids: Vec<&str> = events.iter().filter_map(|e| e.id.as_deref()).collect();
    assert_eq!(ids, [up.as_str(), web.as_str()]);
}

#[tokio::test]
async fn positions_answer_head_last_id_and_buffered() {
    let server = TestServer::start_default().await;
    let first = server.publish("pos.a", None, json!("1")).await;
    let second = server.publish("pos.a", None, json!("2")).await;
    let other = server.publish("pos.b", None, json!("3")).await;
    let token = server.token(&["pos.*"], &[]);
    let get = |path: &str, token: &str| server.http.get(server.url(path)).bearer_auth(token).send();
    let response = get("/streams/pos.a", &token).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["stream"], "pos.a");
    assert_eq!(body["last_id"], second.as_str());
    assert_eq!(body["buffered"], 2);
    let head: u64 = body["head"].as_str().unwrap().parse().unwrap();
    assert!(
        head >= other.parse::<u64>().unwrap(),
        "head is the deployment's newest id"
    );
    assert!(first < second);
    let body: Value = get("/streams/pos.none", &token).await.unwrap().json().await.unwrap();
    assert_eq!(
        (body["last_id"].clone(), body["buffered"].clone()),
        (Value::Null, json!(0))
    );
    // Errors: no token, a token that does not cover the stream, a bad name.
    let anonymous = server.http.get(server.url("/streams/pos.a")).send().await.unwrap();
    assert_eq!(error_of(anonymous).await.0, StatusCode::UNAUTHORIZED);
    let narrow = server.token(&["other"], &[]);
    let denied = get("/streams/pos.a", &narrow).await.unwrap();
    assert_eq!(
        error_of(denied).await,
        (StatusCode::FORBIDDEN, "stream_not_permitted".to_owned())
    );
    let bad = get("/streams/pos.*", &token).await.unwrap();
    assert_eq!(
        error_of(bad).await,
        (StatusCode::BAD_REQUEST, "invalid_stream_name".to_owned())
    );
}

#[tokio::test]
async fn a_firehose_subscriber_that_cannot_keep_up_is_disconnected_like_any_other() {
    let mut config = test_config();
    config.limits.subscriber_queue = 4;
    config.limits.max_event_bytes = 128 * 1024;
    config.limits.max_body_bytes = 256 * 1024;
    config.limits.max_connections = 2;
    let server = TestServer::start(config).await;
    // The firehose client never polls its body; the fast one follows one stream of many.
    let mut firehose = server.subscribe(&["*"], None).await;
    let mut fast = server.subscribe(&["fh.0"], None).await;
    let payload = "x".repeat(64 * 1024);
    let token = server.token(&["*"], &[]);
    let mut published = Vec::new();
    loop {
        assert!(published.len() < 4000, "the firehose subscriber was never disconnected");
        for n in 0..10 {
            // Nine other streams between two events of the fast subscriber's one.
            let stream = format!("fh.{n}");
            let id = server.publish(&stream, None, json!(payload)).await;
            if n == 0 {
                assert_eq!(fast.next_event().await.id.as_deref(), Some(id.as_str()));
            }
            published.push(id);
        }
        // A third connection is accepted once the firehose one is cut off.
        let probe = server.get_events(&["probe"], &token).await;
        if probe.status() == StatusCode::OK {
            break;
        }
    }
    let received = within("the firehose stream to end", firehose.until_end()).await;
    assert!(received.len() < published.len());
    let ids: Vec<String> = received.iter().map(|event| event.id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        published[..received.len()],
        "in order across streams, nothing skipped"
    );
}
