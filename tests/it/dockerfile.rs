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
