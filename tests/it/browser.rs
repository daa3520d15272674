//! Real-browser tests in headless Chromium: the demo page, `EventSource` with
//! `?access_token=`, the browser's own reconnect with `Last-Event-ID`, gap notices.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::browser::Browser;
use crate::support::proxy::ChaosProxy;
use crate::support::{TestServer, test_config};

/// Installs an `EventSource` on the current page that records every event.
const LISTEN: &str = r#"
    window.got = []; window.gaps = []; window.opens = 0;
    const source = new EventSource(arguments[0]);
    source.onopen = () => { window.opens += 1; };
    source.onmessage = (e) => window.got.push({ id: e.lastEventId, data: e.data });
    source.addEventListener('gap', (e) => window.gaps.push(JSON.parse(e.data)));
    window.source = source;
"#;

fn ids(got: &Value) -> Vec<String> {
    got.as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_demo_page_shows_published_events_live() {
    let mut config = test_config();
    config.demo.publisher = true;
    config.demo.publish_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/demo")).await;
    browser
        .wait_for("the page to connect", "window.demoState === 'open'")
        .await;
    let health = json!({"host":"web-test","cpu":0.42,"mem":0.63,"status":"ok","at":"2026-11-21T07:00:00Z"});
    let id = server.publish("demo.servers", Some("health"), health).await;
    let pipeline = json!({"pipeline":"api","run":7,"stage":"test","status":"passed","duration_s":42});
    server.publish("demo.ci", Some("pipeline"), pipeline).await;
    browser
        .wait_for("the host card", r#"document.querySelector('[data-host="web-test"]')"#)
        .await;
    browser
        .wait_for("the pipeline row", r#"document.querySelector('[data-pipeline="api"]')"#)
        .await;
    let logged = browser
        .eval("return window.demoEvents.map(e => [e.id, e.stream]);", vec![])
        .await;
    assert!(
        logged.as_array().unwrap().contains(&json!([id, "demo.servers"])),
        "the page knows each event's stream from its envelope: {logged}"
    );
    // Let the sample publisher fill the page before the screenshot.
    browser
        .wait_for("sample events", "window.demoEvents.length >= 15")
        .await;
    let shown = browser
        .eval("return document.querySelector('#last-event-id').textContent;", vec![])
        .await;
    assert!(shown.as_str().unwrap().contains(char::is_numeric));
    browser.screenshot("demo").await;
}

#[tokio::test]
async fn an_event_source_with_an_access_token_receives_two_streams() {
    let server = TestServer::start_default().await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/healthz")).await;
    let token = server.token(&["alpha", "beta"], &[]);
    browser
        .eval(
            LISTEN,
            vec![json!(format!("/events?stream=alpha&stream=beta&access_token={token}"))],
        )
        .await;
    browser.wait_for("the stream to open", "window.opens === 1").await;
    let first = server.publish("alpha", None, json!("from alpha")).await;
    let second = server.publish("beta", None, json!({"from": "beta"})).await;
    let got = browser
        .wait_for("two events", "window.got.length >= 2 && window.got")
        .await;
    assert_eq!(ids(&got), [first, second]);
    assert_eq!(got[0]["data"], "from alpha");
    assert_eq!(got[1]["data"], r#"{"from":"beta"}"#);
}

#[tokio::test]
async fn an_event_source_on_a_prefix_with_envelopes_knows_each_events_stream() {
    let server = TestServer::start_default().await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/healthz")).await;
    let token = server.token(&["shop.*"], &[]);
    browser
        .eval(
            LISTEN,
            vec![json!(format!("/events?stream=shop.*&envelope=1&access_token={token}"))],
        )
        .await;
    browser.wait_for("the stream to open", "window.opens === 1").await;
    let first = server.publish("shop.orders", None, json!({"order": 1})).await;
    server.publish("other", None, json!("not matched")).await;
    let second = server.publish("shop.stock.eu", None, json!("low")).await;
    let got = browser
        .wait_for("two events", "window.got.length >= 2 && window.got")
        .await;
    assert_eq!(ids(&got), [first, second]);
    let envelopes: Vec<Value> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|event| serde_json::from_str(event["data"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(
        envelopes,
        [
            json!({"stream": "shop.orders", "data": {"order": 1}}),
            json!({"stream": "shop.stock.eu", "data": "low"})
        ]
    );
}

#[tokio::test]
async fn the_browser_reconnects_with_last_event_id_and_loses_nothing() {
    let mut config = test_config();
    config.server.retry = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let proxy = ChaosProxy::start(server.addr).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/healthz", proxy.addr)).await;
    let token = server.token(&["r"], &[]);
    browser
        .eval(LISTEN, vec![json!(format!("/events?stream=r&access_token={token}"))])
        .await;
    browser.wait_for("the stream to open", "window.opens === 1").await;
    let mut published = vec![
        server.publish("r", None, json!(1)).await,
        server.publish("r", None, json!(2)).await,
    ];
    browser.wait_for("the first events", "window.got.length === 2").await;

    // The connection drops; events keep coming while the browser is away.
    proxy.cut(true);
    for i in 3..=5 {
        published.push(server.publish("r", None, json!(i)).await);
    }
    proxy.unblock();
    browser.wait_for("the browser to reconnect", "window.opens >= 2").await;
    published.push(server.publish("r", None, json!(6)).await);
    let got = browser
        .wait_for("every event", "window.got.length >= 6 && window.got")
        .await;
    assert_eq!(ids(&got), published, "nothing lost, nothing duplicated, in order");
    let gaps = browser.eval("return window.gaps.length;", vec![]).await;
    assert_eq!(gaps, json!(0));
}

#[tokio::test]
async fn a_gap_notice_reaches_the_page() {
    let mut config = test_config();
    config.server.retry = Duration::from_millis(200);
    config.streams.buffer_size = 2;
    let server = TestServer::start(config).await;
    let proxy = ChaosProxy::start(server.addr).await;
    let browser = Browser::start().await;
    browser.goto(&format!("http://{}/demo", proxy.addr)).await;
    browser
        .wait_for("the demo page to connect", "window.demoState === 'open'")
        .await;
    let first = server.publish("demo.ci", None, json!("before")).await;
    browser
        .wait_for(
            "the first event",
            &format!("window.demoEvents.some(e => e.id === '{first}')"),
        )
        .await;

    // More events than the buffer holds are published while the page is cut off.
    proxy.cut(true);
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(server.publish("demo.ci", None, json!(i)).await);
    }
    proxy.unblock();
    let gap = browser
        .wait_for("the gap notice", "window.demoEvents.find(e => e.type === 'gap')")
        .await;
    let data: Value = serde_json::from_str(gap["data"].as_str().unwrap()).unwrap();
    assert_eq!(data["streams"], json!(["demo.*"]), "the page's subscription");
    browser
        .wait_for(
            "the gap banner",
            "getComputedStyle(document.querySelector('#gap-banner')).display !== 'none'",
        )
        .await;
    // After the notice, what the buffer still holds: the last two events.
    let last = missed.last().unwrap();
    browser
        .wait_for(
            "the retained events",
            &format!("window.demoEvents.some(e => e.id === '{last}')"),
        )
        .await;
    browser.screenshot("gap").await;
}

/// A page on another origin (`http://127.0.0.1:PORT`), served by a tiny server.
async fn other_origin() -> String {
    let page = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html("<!doctype html><title>other origin</title>") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, page).await });
    origin
}

/// On the current page: an `EventSource` with credentials to `url`, recording
/// events and whether the browser gave up.
const LISTEN_WITH_CREDENTIALS: &str = r#"
    window.got = []; window.opened = false; window.errors = 0;
    const source = new EventSource(arguments[0], { withCredentials: true });
    source.onopen = () => { window.opened = true; };
    source.onmessage = (e) => window.got.push({ id: e.lastEventId, data: e.data });
    source.onerror = () => { window.errors += 1; };
    window.source = source;
"#;

/// Sets the token cookie for 127.0.0.1 (cookies ignore ports, so the gateway on
/// another port receives it when the request includes credentials).
const SET_COOKIE: &str = "document.cookie = 'sse_token=' + arguments[0] + '; path=/'; return document.cookie.length;";

#[tokio::test]
async fn an_allowed_origin_subscribes_with_the_token_cookie_and_credentials() {
    let origin = other_origin().await;
    let mut config = test_config();
    config.cors.allowed_origins = vec![origin.clone()];
    config.cors.allow_credentials = true;
    let server = TestServer::start(config).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{origin}/")).await;
    let token = server.token(&["crossed"], &[]);
    browser.eval(SET_COOKIE, vec![json!(token)]).await;
    browser
        .eval(
            LISTEN_WITH_CREDENTIALS,
            vec![json!(server.url("/events?stream=crossed"))],
        )
        .await;
    browser
        .wait_for("the stream to open", "window.source.readyState === EventSource.OPEN")
        .await;
    let id = server.publish("crossed", None, json!("over the fence")).await;
    let got = browser
        .wait_for("the event", "window.got.length >= 1 && window.got")
        .await;
    assert_eq!(ids(&got), [id], "the cookie authenticated the cross-origin stream");
}

#[tokio::test]
async fn an_origin_that_is_not_listed_gets_nothing_even_with_the_cookie() {
    let listed = other_origin().await;
    let unlisted = other_origin().await;
    let mut config = test_config();
    config.cors.allowed_origins = vec![listed];
    config.cors.allow_credentials = true;
    let server = TestServer::start(config).await;
    let browser = Browser::start().await;
    browser.goto(&format!("{unlisted}/")).await;
    browser
        .eval(SET_COOKIE, vec![json!(server.token(&["crossed"], &[]))])
        .await;
    browser
        .eval(
            LISTEN_WITH_CREDENTIALS,
            vec![json!(server.url("/events?stream=crossed"))],
        )
        .await;
    // The gateway answers 200, but without this origin in Access-Control-Allow-Origin
    // the browser fails the connection: it never opens, and gives up for good.
    server.publish("crossed", None, json!("not for you")).await;
    browser
        .wait_for(
            "the browser to refuse the stream",
            "window.errors >= 1 && window.source.readyState === EventSource.CLOSED",
        )
        .await;
    let seen = browser.eval("return [window.opened, window.got];", vec![]).await;
    assert_eq!(
        seen,
        json!([false, []]),
        "the browser blocks a response without this origin in CORS"
    );
}

#[tokio::test]
async fn the_demo_page_renews_its_token_on_the_warning_without_losing_or_repeating_events() {
    let mut config = test_config();
    // The warning arrives about two seconds after each connect.
    config.demo.token_ttl = Duration::from_secs(8);
    config.auth.expiry_warning = Duration::from_secs(6);
    let server = TestServer::start(config).await;
    let browser = Browser::start().await;
    browser.goto(&server.url("/demo")).await;
    browser
        .wait_for("the page to connect", "window.demoState === 'open'")
        .await;
    let mut published = Vec::new();
    let recorded = "window.demoEvents.filter(e => e.stream === 'demo.tick').map(e => e.id)";
    let renewals = async {
        loop {
            // Bursts of three, so some land while the page switches streams.
            for n in 0..3 {
                published.push(server.publish("demo.tick", None, json!({"n": n})).await);
            }
            let last = published.last().unwrap().clone();
            browser
                .wait_for("the burst on the page", &format!("{recorded}.includes('{last}')"))
                .await;
            let renewals = browser.eval("return window.demoTokenRenewals;", vec![]).await;
            if renewals.as_u64().unwrap() >= 2 {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(90), renewals)
        .await
        .expect("two token renewals within 90 s");
    let shown = browser.eval(&format!("return {recorded};"), vec![]).await;
    let shown: Vec<String> = serde_json::from_value(shown).unwrap();
    assert_eq!(
        shown, published,
        "every event once, in order, across the token switches"
    );
    let gaps = browser
        .eval("return window.demoEvents.filter(e => e.type === 'gap').length;", vec![])
        .await;
    assert_eq!(gaps, json!(0));
}
