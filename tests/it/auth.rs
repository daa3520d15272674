//! Tokens of every supported algorithm, and the checks on their claims.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sse_gateway::auth::Claims;
use sse_gateway::auth::mint::{SigningKey, mint};
use sse_gateway::config::{Algorithm, Config};

use crate::support::server::{SECRET, now, patterns, token_with};
use crate::support::{TestServer, test_config};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn all_algorithms_config() -> Config {
    let mut config = test_config();
    config.auth.algorithms = vec![Algorithm::HS256, Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];
    config.auth.rs256_public_key_file = Some(fixture("rs256.pub.pem"));
    config.auth.es256_public_key_file = Some(fixture("es256.pub.pem"));
    config.auth.eddsa_public_key_file = Some(fixture("ed25519.pub.pem"));
    config
}

fn claims() -> Claims {
    Claims {
        sub: Some("alg-test".to_owned()),
        exp: Some(now() + 600),
        subscribe: patterns(&["*"]),
        ..Claims::default()
    }
}

async fn subscribe_status(server: &TestServer, token: &str) -> (StatusCode, Value) {
    let response = server.get_events(&["a"], token).await;
    let status = response.status();
    if status == StatusCode::OK {
        return (status, Value::Null);
    }
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn tokens_of_every_configured_algorithm_are_accepted() {
    let server = TestServer::start(all_algorithms_config()).await;
    let keys = [
        SigningKey::hs256(SECRET),
        SigningKey::from_pem_file(Algorithm::RS256, &fixture("rs256.key.pem")).unwrap(),
        SigningKey::from_pem_file(Algorithm::ES256, &fixture("es256.key.pem")).unwrap(),
        SigningKey::from_pem_file(Algorithm::EdDSA, &fixture("ed25519.key.pem")).unwrap(),
    ];
    for key in keys {
        let token = mint(&claims(), &key).unwrap();
        assert_eq!(
            subscribe_status(&server, &token).await.0,
            StatusCode::OK,
            "{:?}",
            key.algorithm()
        );
    }
}

#[tokio::test]
async fn only_configured_algorithms_are_accepted() {
    let mut config = all_algorithms_config();
    config.auth.algorithms = vec![Algorithm::RS256];
    let server = TestServer::start(config).await;
    let es = mint(
        &claims(),
        &SigningKey::from_pem_file(Algorithm::ES256, &fixture("es256.key.pem")).unwrap(),
    )
    .unwrap();
    let (status, body) = subscribe_status(&server, &es).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "algorithm_not_allowed");
}

#[tokio::test]
async fn an_rs256_public_key_used_as_an_hs256_secret_is_refused() {
    let mut config = all_algorithms_config();
    config.auth.algorithms = vec![Algorithm::RS256];
    let server = TestServer::start(config).await;
    let public_pem = std::fs::read(fixture("rs256.pub.pem")).unwrap();
    let forged = mint(&claims(), &SigningKey::hs256(&public_pem)).unwrap();
    assert_eq!(subscribe_status(&server, &forged).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unsigned_and_tampered_tokens_are_refused() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let server = TestServer::start_default().await;
    let payload = b64.encode(serde_json::to_vec(&claims()).unwrap());
    let unsigned = format!("{}.{payload}.", b64.encode(br#"{"alg":"none","typ":"JWT"}"#));
    assert_eq!(subscribe_status(&server, &unsigned).await.0, StatusCode::UNAUTHORIZED);
    let genuine = mint(&claims(), &SigningKey::hs256(SECRET)).unwrap();
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let mut escalated = claims();
    escalated.sub = Some("admin".to_owned());
    let tampered_payload = b64.encode(serde_json::to_vec(&escalated).unwrap());
    parts[1] = &tampered_payload;
    let (status, body) = subscribe_status(&server, &parts.join(".")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "bad_signature");
}

#[tokio::test]
async fn exp_is_required_and_nbf_iss_aud_are_checked_when_configured() {
    let mut config = test_config();
    config.auth.issuer = Some("https://issuer.test".to_owned());
    config.auth.audience = vec!["sse".to_owned()];
    let server = TestServer::start(config).await;
    let good = |claims: &mut Claims| {
        claims.subscribe = patterns(&["*"]);
        claims.iss = Some("https://issuer.test".to_owned());
        claims.aud = vec!["sse".to_owned()];
    };
    assert_eq!(subscribe_status(&server, &token_with(good)).await.0, StatusCode::OK);
    type Spoil = fn(&mut Claims);
    let cases: [(&str, Spoil); 4] = [
        ("missing_claim", |c| c.exp = None),
        ("token_not_yet_valid", |c| c.nbf = Some(now() + 600)),
        ("wrong_issuer", |c| c.iss = Some("https://evil.test".to_owned())),
        ("wrong_audience", |c| c.aud = vec!["other".to_owned()]),
    ];
    for (reason, spoil) in cases {
        let token = token_with(|claims| {
            good(claims);
            spoil(claims);
        });
        let (status, body) = subscribe_status(&server, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}");
        assert_eq!(body["error"], reason);
    }
}

#[tokio::test]
async fn fractional_numeric_dates_are_accepted() {
    let server = TestServer::start_default().await;
    let exp = now() as f64 + 600.5;
    let token = mint_raw_claims(&serde_json::json!({"exp": exp, "iat": exp - 600.0, "subscribe": ["*"]}));
    assert_eq!(subscribe_status(&server, &token).await.0, StatusCode::OK);
    let expired = mint_raw_claims(&serde_json::json!({"exp": now() as f64 - 0.5, "subscribe": ["*"]}));
    assert_eq!(subscribe_status(&server, &expired).await.1["error"], "token_expired");
}

#[tokio::test]
async fn a_configured_issuer_and_audience_must_be_present() {
    let mut config = test_config();
    config.auth.issuer = Some("https://issuer.test".to_owned());
    config.auth.audience = vec!["sse".to_owned()];
    let server = TestServer::start(config).await;
    let without_iss = token_with(|c| {
        c.subscribe = patterns(&["*"]);
        c.aud = vec!["sse".to_owned()];
    });
    let without_aud = token_with(|c| {
        c.subscribe = patterns(&["*"]);
        c.iss = Some("https://issuer.test".to_owned());
    });
    for token in [without_iss, without_aud] {
        let (status, body) = subscribe_status(&server, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "missing_claim");
    }
}

#[tokio::test]
async fn an_expiry_beyond_the_clock_is_no_expiry_not_a_crash() {
    let server = TestServer::start_default().await;
    for exp in [json!(u64::MAX), json!(1e300)] {
        let token = mint_raw_claims(&json!({"exp": exp, "subscribe": ["*"], "publish": ["*"]}));
        assert_eq!(subscribe_status(&server, &token).await.0, StatusCode::OK, "{exp}");
        let publish = server
            .http
            .post(server.url("/events"))
            .bearer_auth(&token)
            .json(&json!({"stream":"a","data":1}))
            .send()
            .await
            .unwrap();
        assert_eq!(publish.status(), StatusCode::OK, "{exp}");
    }
}

#[tokio::test]
async fn a_configured_key_id_must_match_the_token_kid() {
    let mut config = test_config();
    config.auth.key_ids.hs256 = Some("k-2026".to_owned());
    let server = TestServer::start(config).await;
    let sign = |kid: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(
            &header,
            &json!({"exp": now() + 60, "subscribe": ["*"]}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    assert_eq!(subscribe_status(&server, &sign(Some("k-2026"))).await.0, StatusCode::OK);
    for kid in [None, Some("k-1999"), Some("")] {
        let (status, body) = subscribe_status(&server, &sign(kid)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kid:?}");
        assert_eq!(body["error"], "unknown_key");
    }
}

#[tokio::test]
async fn malformed_patterns_invalidate_the_token() {
    let server = TestServer::start_default().await;
    let token = mint_raw_claims(&serde_json::json!({"exp": now() + 60, "subscribe": ["a*b"]}));
    let (status, body) = subscribe_status(&server, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_claims");
}

/// Signs arbitrary JSON claims with the test secret.
fn mint_raw_claims(claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_critical_header_extension_is_refused() {
    let server = TestServer::start_default().await;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.crit = Some(vec!["urn:example:must-understand".to_owned()]);
    let token = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = subscribe_status(&server, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "unsupported_extension");
}
