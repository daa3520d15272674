//! The Dockerfile passes hadolint (no Docker engine runs here to build it).

#[test]
fn dockerfile_passes_hadolint() {
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    let output = std::process::Command::new("hadolint")
        .args(["--failure-threshold", "style", dockerfile])
        .output()
        .expect("hadolint is installed (run the tests with scripts/test)");
    assert!(
        output.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `docker-compose.yml` is valid (`docker compose config`, or Debian's
/// `docker-compose` where the plugin is missing) and wires the dashboard and the
/// Prometheus configuration that exist in the repository.
#[test]
fn docker_compose_file_validates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let plugin = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|output| output.status.success());
    let mut command = if plugin {
        let mut command = std::process::Command::new("docker");
        command.arg("compose");
        command
    } else {
        std::process::Command::new("docker-compose")
    };
    let output = command
        .current_dir(root)
        .env("SSE_GATEWAY_AUTH__HS256_SECRET", "compose-test-secret")
        .args(["config"])
        .output()
        .expect("docker compose or docker-compose is installed (run the tests with scripts/test)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for service in ["gateway:", "redis:", "prometheus:", "grafana:"] {
        assert!(text.contains(service), "{service} missing:\n{text}");
    }
    for file in [
        "deploy/prometheus/prometheus.yml",
        "grafana/sse-gateway.json",
        "grafana/provisioning",
    ] {
        assert!(std::path::Path::new(root).join(file).exists(), "{file}");
    }
}

/// The `ENV` settings of the Dockerfile's runtime stage, as `(key, value)`.
fn dockerfile_env() -> Vec<(String, String)> {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let runtime = dockerfile.rsplit("FROM ").next().unwrap().replace("\\\n", " ");
    runtime
        .lines()
        .filter_map(|line| line.strip_prefix("ENV "))
        .flat_map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

/// The image runs the production defaults: the binary, started with the image's
/// environment and configuration file, serves no demo page and publishes nothing.
#[tokio::test]
async fn the_image_runs_without_the_demo() {
    let env = dockerfile_env();
    assert!(env.iter().any(|(key, _)| key == "SSE_GATEWAY_DEMO__ENABLED"), "{env:?}");
    let dir = tempfile::tempdir().unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
    let mut envs: Vec<(&str, &str)> = env
        .iter()
        .filter(|(key, _)| key != "SSE_GATEWAY_SERVER__ADDR" && key != "SSE_GATEWAY_CONFIG")
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    envs.push(("SSE_GATEWAY_CONFIG", config));
    envs.push(("SSE_GATEWAY_AUTH__HS256_SECRET", crate::support::server::SECRET));
    let gateway = crate::support::binary::GatewayProcess::serve(dir.path(), &envs).await;
    let http = reqwest::Client::new();
    for path in ["/demo", "/"] {
        let status = http
            .get(format!("http://{}{path}", gateway.addr))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    let metrics = gateway.metrics_text().await;
    assert!(
        metrics.contains("sse_events_published_total{source=\"demo\"} 0"),
        "no sample publisher"
    );
}
