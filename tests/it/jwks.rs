//! Keys from a JWKS (`auth.jwks_url`): a local HTTP server serves the set,
//! rotates it, fails, and is flooded with tokens naming unknown `kid`s.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::routing::get;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use reqwest::StatusCode;
use serde_json::Value;
use sse_gateway::auth::Claims;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::config::{Algorithm, Config};

use crate::support::server::{now, patterns};
use crate::support::{TestServer, test_config, within};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// One of the fixture key pairs, with the `kid` it is published under.
struct TestKey {
    alg: Algorithm,
    file: &'static str,
    kid: String,
}

impl TestKey {
    fn new(alg: Algorithm, file: &'static str, kid: &str) -> Self {
        Self {
            alg,
            file,
            kid: kid.to_owned(),
        }
    }

    fn pem(&self) -> Vec<u8> {
        std::fs::read(fixture(self.file)).unwrap()
    }

    fn jwk(&self) -> Jwk {
        let pem = self.pem();
        let encoding = match self.alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            Algorithm::HS256 => unreachable!(),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&encoding, self.alg.to_jwt()).unwrap();
        jwk.common.key_id = Some(self.kid.clone());
        jwk
    }

    /// A subscribe token signed with this key, naming `kid` in its header.
    fn token_naming(&self, kid: &str) -> String {
        let claims = Claims {
            sub: Some("jwks-test".to_owned()),
            exp: Some(now() + 600),
            subscribe: patterns(&["*"]),
            ..Claims::default()
        };
        let key = SigningKey::from_pem(self.alg, &self.pem()).unwrap().with_kid(kid);
        mint(&claims, &key).unwrap()
    }

    fn token(&self) -> String {
        self.token_naming(&self.kid)
    }
}

/// What the identity provider serves, and how often it was asked.
#[derive(Default)]
struct Provider {
    document: Mutex<String>,
    failing: AtomicBool,
    fetches: AtomicUsize,
}

impl Provider {
    fn publish(&self, keys: &[&TestKey]) {
        let set = JwkSet {
            keys: keys.iter().map(|key| key.jwk()).collect(),
        };
        *self.document.lock().unwrap() = serde_json::to_string(&set).unwrap();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

async fn serve_jwks(State(provider): State<Arc<Provider>>) -> (AxumStatus, String) {
    provider.fetches.fetch_add(1, Ordering::SeqCst);
    if provider.failing.load(Ordering::SeqCst) {
        return (AxumStatus::INTERNAL_SERVER_ERROR, "down".to_owned());
    }
    (AxumStatus::OK, provider.document.lock().unwrap().clone())
}

/// Starts the provider on port 0; returns it and the JWKS URL.
async fn start_provider() -> (Arc<Provider>, String) {
    let provider = Arc::new(Provider::default());
    let app = Router::new()
        .route("/.well-known/jwks.json", get(serve_jwks))
        .with_state(Arc::clone(&provider));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/.well-known/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (provider, url)
}

fn jwks_config(url: &str, refresh: Duration, cooldown: Duration) -> Config {
    let mut config = test_config();
    config.auth.algorithms = vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    config.auth.jwks_url = Some(url.to_owned());
    config.auth.jwks_refresh = refresh;
    config.auth.jwks_cooldown = cooldown;
    config.demo.enabled = false;
    config
}

async fn status_of(server: &TestServer, token: &str) -> (StatusCode, Value) {
    let response = server.get_events(&["a"], token).await;
    let status = response.status();
    if status == StatusCode::OK {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap())
}

/// Waits (bounded) until `token` gets `expected`.
async fn until_status(server: &TestServer, token: &str, expected: StatusCode) {
    within("the expected status", async {
        while status_of(server, token).await.0 != expected {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn keys_of_every_algorithm_verify_by_kid() {
    let (provider, url) = start_provider().await;
    let keys = [
        TestKey::new(Algorithm::RS256, "rs256.key.pem", "rsa-1"),
        TestKey::new(Algorithm::ES256, "es256.key.pem", "ec-1"),
        TestKey::new(Algorithm::EdDSA, "ed25519.key.pem", "ed-1"),
    ];
    provider.publish(&keys.iter().collect::<Vec<_>>());
    let server = TestServer::start(jwks_config(&url, Duration::from_secs(600), Duration::from_secs(600))).await;
    for key in &keys {
        assert_eq!(status_of(&server, &key.token()).await.0, StatusCode::OK, "{}", key.kid);
    }
    // A key is used only for its own algorithm: an EdDSA token naming the RSA kid fails.
    let (status, body) = status_of(&server, &keys[2].token_naming("rsa-1")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(provider.fetches(), 1, "only the startup fetch");
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_first_use_and_a_removed_one_is_dropped() {
    let (provider, url) = start_provider().await;
    let old = TestKey::new(Algorithm::RS256, "rs256.key.pem", "2026-01");
    let new = TestKey::new(Algorithm::ES256, "es256.key.pem", "2026-02");
    provider.publish(&[&old]);
    let server = TestServer::start(jwks_config(&url, Duration::from_secs(1), Duration::from_millis(200))).await;
    assert_eq!(status_of(&server, &old.token()).await.0, StatusCode::OK);

    // The provider rotates: a token signed with the new key is accepted as soon as
    // the gateway fetches again because of its unknown kid.
    provider.publish(&[&old, &new]);
    until_status(&server, &new.token(), StatusCode::OK).await;
    assert!(
        server
            .metric(r#"sse_jwks_refreshes_total{trigger="unknown_kid",result="ok"}"#)
            .await
            >= 1.0
    );

    // The old key is withdrawn: the periodic refresh drops it.
    provider.publish(&[&new]);
    until_status(&server, &old.token(), StatusCode::UNAUTHORIZED).await;
    let (_, body) = status_of(&server, &old.token()).await;
    assert_eq!(body["error"], "unknown_key");
    assert_eq!(status_of(&server, &new.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_provider_leaves_the_last_good_set_in_use() {
    let (provider, url) = start_provider().await;
    let key = TestKey::new(Algorithm::EdDSA, "ed25519.key.pem", "ed-live");
    provider.publish(&[&key]);
    let server = TestServer::start(jwks_config(
        &url,
        Duration::from_millis(300),
        Duration::from_millis(100),
    ))
    .await;
    assert_eq!(status_of(&server, &key.token()).await.0, StatusCode::OK);
    provider.failing.store(true, Ordering::SeqCst);
    let before = provider.fetches();
    within("two failed refreshes", async {
        while provider.fetches() < before + 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        status_of(&server, &key.token()).await.0,
        StatusCode::OK,
        "last good set kept"
    );
    assert!(
        server
            .metric(r#"sse_jwks_refreshes_total{trigger="periodic",result="failed"}"#)
            .await
            >= 1.0
    );
    // So is a document without usable keys.
    provider.failing.store(false, Ordering::SeqCst);
    *provider.document.lock().unwrap() = r#"{"keys":[{"kty":"oct","kid":"ed-live","k":"c2VjcmV0"}]}"#.to_owned();
    let before = provider.fetches();
    within("another refresh", async {
        while provider.fetches() < before + 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(status_of(&server, &key.token()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_costs_one_fetch_per_cooldown() {
    let (provider, url) = start_provider().await;
    let key = TestKey::new(Algorithm::ES256, "es256.key.pem", "real");
    provider.publish(&[&key]);
    let cooldown = Duration::from_secs(2);
    let server = TestServer::start(jwks_config(&url, Duration::from_secs(600), cooldown)).await;
    assert_eq!(status_of(&server, &key.token()).await.0, StatusCode::OK);
    // Once the cooldown after the startup fetch has passed, an unknown kid fetches.
    let after_startup = provider.fetches();
    within("a fetch for an unknown kid", async {
        while provider.fetches() == after_startup {
            status_of(&server, &key.token_naming("probe")).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let started = Instant::now();
    let before = provider.fetches();
    let attempts: Vec<_> = (0..200)
        .map(|i| {
            let token = key.token_naming(&format!("random-{i}"));
            let server = &server;
            async move { status_of(server, &token).await }
        })
        .collect();
    for (status, body) in futures::future::join_all(attempts).await {
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "unknown_key");
    }
    let elapsed = started.elapsed();
    let fetched = provider.fetches() - before;
    let allowed = 1 + (elapsed.as_secs_f64() / cooldown.as_secs_f64()).ceil() as usize;
    assert!(
        fetched <= allowed,
        "{fetched} fetches for 200 unknown kids in {elapsed:?} (cooldown {cooldown:?})"
    );
}

#[tokio::test]
async fn a_jwks_file_is_read_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let key = TestKey::new(Algorithm::RS256, "rs256.key.pem", "file-key");
    std::fs::write(&path, serde_json::to_string(&JwkSet { keys: vec![key.jwk()] }).unwrap()).unwrap();
    let url = format!("file://{}", path.display());
    let server = TestServer::start(jwks_config(&url, Duration::from_secs(600), Duration::from_secs(1))).await;
    assert_eq!(status_of(&server, &key.token()).await.0, StatusCode::OK);
}
