//! The real binary: `token` mints verifiable tokens, `serve` generates a secret when
//! none is configured, serves, and exits cleanly on SIGTERM.

use std::process::Command;

use reqwest::StatusCode;

use crate::support::binary::{BIN, GatewayProcess};
use crate::support::server::SECRET;
use crate::support::{TestServer, within};

#[tokio::test]
async fn token_command_mints_a_token_the_gateway_accepts() {
    let server = TestServer::start_default().await;
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env("SSE_GATEWAY_AUTH__HS256_SECRET", SECRET)
        .args(["token", "--sub", "cli-test", "--subscribe", "news.*", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let allowed = server.get_events(&["news.eu"], &token).await;
    assert_eq!(allowed.status(), StatusCode::OK);
    let denied = server.get_events(&["sports"], &token).await;
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
}

#[test]
fn token_command_refuses_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("SSE_GATEWAY_AUTH__HS256_SECRET")
        .args(["token", "--subscribe", "*"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no HS256 secret"));
}

#[tokio::test]
async fn serve_without_a_secret_generates_one_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = GatewayProcess::serve(dir.path(), &[]).await;
    let addr = gateway.addr.clone();
    let log = gateway.log.clone();
    assert!(log.contains("generated a random one"), "{log}");
    let secret_file = dir.path().join(".sse-gateway-secret");
    assert!(secret_file.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&secret_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert!(!log.contains(secret.trim()), "the secret is never logged");

    // `token` run in the same directory signs with the generated secret.
    let output = Command::new(BIN)
        .current_dir(dir.path())
        .env_remove("SSE_GATEWAY_AUTH__HS256_SECRET")
        .args(["token", "--subscribe", "*"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let response = http
        .get(format!("http://{addr}/events?stream=a"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    // A token in the query string is redacted from request logs.
    let by_query = http
        .get(format!("http://{addr}/events?stream=b&access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), StatusCode::OK);
    drop(by_query);

    let pid = gateway.child.id().to_string();
    assert!(
        Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap()
            .success()
    );
    let status = within("exit after SIGTERM", async {
        loop {
            if let Some(status) = gateway.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(status.success(), "{status:?}");
    gateway.drain_log().await;
    // Requests are logged by route template: neither the query nor the token shows.
    assert!(gateway.log.contains(r#"route="/events""#), "{}", gateway.log);
    assert!(!gateway.log.contains("access_token"), "{}", gateway.log);
    assert!(!gateway.log.contains(&token), "tokens are never logged");
}
