//! `[server.tls]`: HTTPS with HTTP/2 by ALPN (many event streams on one connection
//! in a real browser), certificate reload on SIGHUP without dropping streams, and
//! unusable files named at startup. Certificates are made in the test with rcgen.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sse_gateway::config::Config;
use sse_gateway::server::{self, Listeners};

use crate::support::binary::GatewayProcess;
use crate::support::browser::Browser;
use crate::support::server::{SECRET, patterns, token_with};
use crate::support::{SseStream, TestServer, test_config, within};

/// A self-signed certificate for 127.0.0.1 and localhost, written to `dir`.
fn make_certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

fn tls_config(cert: &Path, key: &Path) -> Config {
    let mut config = test_config();
    config.server.tls.cert_file = Some(cert.to_owned());
    config.server.tls.key_file = Some(key.to_owned());
    config
}

fn tls_client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .build()
        .unwrap()
}

/// The certificate the server presents to a new connection.
async fn presented_certificate(http: &reqwest::Client, base: &str) -> Vec<u8> {
    let response = http.get(format!("{base}/healthz")).send().await.unwrap();
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("a TLS connection")
        .to_vec()
}

#[tokio::test]
async fn a_browser_opens_more_than_six_event_streams_over_one_http2_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = make_certificate(dir.path(), "server");
    let server = TestServer::start(tls_config(&cert, &key)).await;
    let base = format!("https://{}", server.addr);
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/healthz")).await;
    let protocol = browser
        .eval(
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol;",
            vec![],
        )
        .await;
    assert_eq!(protocol, json!("h2"), "ALPN chose HTTP/2");
    const STREAMS: usize = 8;
    let names: Vec<String> = (0..STREAMS).map(|n| format!("tls.s{n}")).collect();
    let token = token_with(|claims| claims.subscribe = patterns(&["tls.*"]));
    browser
        .eval(
            r#"
            window.got = {}; window.open_count = 0;
            for (const name of arguments[0]) {
                const source = new EventSource(`/events?stream=${name}&access_token=${arguments[1]}`);
                source.onopen = () => { window.open_count += 1; };
                source.onmessage = (e) => { window.got[name] = e.data; };
            }
            "#,
            vec![json!(names), json!(token)],
        )
        .await;
    browser
        .wait_for("every stream to open", &format!("window.open_count === {STREAMS}"))
        .await;
    let publisher = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let publish_token = token_with(|claims| claims.publish = patterns(&["tls.*"]));
    for name in &names {
        let reply = publisher
            .post(format!("{base}/events"))
            .bearer_auth(&publish_token)
            .json(&json!({"stream": name, "data": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), reqwest::StatusCode::OK);
    }
    let got = browser
        .wait_for(
            "an event on every stream",
            &format!("Object.keys(window.got).length === {STREAMS} && window.got"),
        )
        .await;
    for name in &names {
        assert_eq!(got[name], json!(name));
    }
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (first_cert, first_key, first_der) = make_certificate(dir.path(), "first");
    let (cert, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(&first_cert, &cert).unwrap();
    std::fs::copy(&first_key, &key).unwrap();
    let (cert_text, key_text) = (cert.display().to_string(), key.display().to_string());
    let gateway = GatewayProcess::serve(
        dir.path(),
        &[
            ("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET),
            ("SSE_GATEWAY_DEMO__PUBLISHER", "false"),
            ("SSE_GATEWAY_SERVER__TLS__CERT_FILE", cert_text.as_str()),
            ("SSE_GATEWAY_SERVER__TLS__KEY_FILE", key_text.as_str()),
        ],
    )
    .await;
    let base = format!("https://{}", gateway.addr);
    let http = tls_client();
    assert_eq!(presented_certificate(&http, &base).await, first_der);
    let token = token_with(|claims| {
        claims.subscribe = patterns(&["*"]);
        claims.publish = patterns(&["*"]);
    });
    let response = http
        .get(format!("{base}/events?stream=reload"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let mut stream = SseStream::new(response);

    let (second_cert, second_key, second_der) = make_certificate(dir.path(), "second");
    std::fs::copy(&second_cert, &cert).unwrap();
    std::fs::copy(&second_key, &key).unwrap();
    let pid = gateway.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    within("the new certificate", async {
        loop {
            // A fresh client: a new connection, a new handshake.
            if presented_certificate(&tls_client(), &base).await == second_der {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let reply: Value = http
        .post(format!("{base}/events"))
        .bearer_auth(&token)
        .json(&json!({"stream": "reload", "data": "after the reload"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = stream.next_event().await;
    assert_eq!(
        event.data, "after the reload",
        "the stream opened before the reload goes on"
    );
    assert_eq!(event.id.as_deref(), reply["id"].as_str());
}

#[tokio::test]
async fn unusable_certificate_files_stop_startup_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = make_certificate(dir.path(), "ok");
    let missing = dir.path().join("missing.key");
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    for key in [&missing, &garbage] {
        let config = tls_config(&cert, key);
        let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listeners = Listeners {
            main,
            metrics: None,
            udp: None,
        };
        let error = server::run(config, listeners, std::future::pending())
            .await
            .expect_err("startup fails");
        assert!(error.to_string().contains(&key.display().to_string()), "{error}");
    }
}
