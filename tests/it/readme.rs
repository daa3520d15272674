//! The README's examples run against the real binary, so they cannot drift from
//! the product: the `curl` walkthrough (every `sh` block, in order, with the
//! outputs its `# {…}` comments show, and every `text` block marked
//! `<!-- readme-test: subscriber N -->` as what the N-th `curl -N` receives), the
//! revocation example, and every `toml` block as configuration.
//!
//! README ids are realistic literals; the test maps each to the id the gateway
//! really answered (from the publish replies) before comparing or running.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::support::binary::{BIN, GatewayProcess};
use crate::support::within;

const README: &str = include_str!("../../README.md");

#[derive(Debug, Clone)]
struct Block {
    lang: String,
    text: String,
    /// The `readme-test: subscriber N` marker before it, if any.
    subscriber: Option<usize>,
}

/// The fenced blocks of `section` (from its heading to the next `## `).
fn blocks(section: &str) -> Vec<Block> {
    let start = README.find(section).unwrap_or_else(|| panic!("README has {section}"));
    let body = &README[start + section.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut blocks = Vec::new();
    let mut lines = body.lines();
    let mut marker = None;
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("<!-- readme-test: subscriber ") {
            marker = n.trim_end_matches(" -->").parse().ok();
        } else if let Some(lang) = line.strip_prefix("```")
            && !lang.is_empty()
        {
            let text: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
            blocks.push(Block {
                lang: lang.to_owned(),
                text: text.join("\n"),
                subscriber: marker.take(),
            });
        }
    }
    blocks
}

/// Every id-like number (15+ digits) in `text`, in order.
fn ids_in(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() >= 15)
        .map(str::to_owned)
        .collect()
}

fn replace_ids(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (readme, real) in map {
        out = out.replace(readme.as_str(), real.as_str());
    }
    out
}

/// The events of an SSE text (comments and `retry:` left out), as blocks of lines.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .map(|record| {
            record
                .lines()
                .filter(|line| !line.starts_with(':') && !line.starts_with("retry:"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|record| !record.is_empty())
        .collect()
}

/// The JSON values `text` holds one after another (curl prints replies without a
/// newline), each as compact text.
fn json_values(text: &str) -> Vec<String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<serde_json::Value>()
        .map(|value| value.expect("JSON output").to_string())
        .collect()
}

/// Runs `script` with bash in `dir` with `env`; returns stdout (fails on error).
fn bash(dir: &Path, env: &[(&str, &str)], script: &str) -> String {
    let output = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{script}\nfailed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Shell prelude: `cargo run -q --release --` is the binary under test, and a
/// `curl -N` (a subscriber) runs in the background into `sub<N>.txt` until the
/// test ends it, once its stream is open.
const PRELUDE: &str = r#"
cargo() { shift 4; "$GW" "$@"; }
curl() {
    if [[ $1 == -N ]]; then
        shift
        local n; n=$(( $(find . -maxdepth 1 -name 'sub*.txt' | wc -l) + 1 ))
        command curl -sN "$@" > "sub$n.txt" 2>/dev/null &
        echo $! >> subscribers.pid
        for _ in $(seq 200); do grep -q '^: connected' "sub$n.txt" 2>/dev/null && return 0; sleep 0.05; done
        echo "subscriber $n did not connect" >&2; return 1
    fi
    command curl "$@"
}
"#;

#[tokio::test]
async fn the_walkthrough_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    // As the README's first command: no secret configured, so `serve` makes one and
    // says how to mint tokens with this binary. The demo publisher is off so that
    // `head` is the walkthrough's own last event.
    let mut gateway = GatewayProcess::serve(dir.path(), &[("SSE_GATEWAY_DEMO__PUBLISHER", "false")]).await;
    let hint = within("the minting hint", async {
        loop {
            if let Some(line) = gateway.log.lines().find(|line| line.contains("Mint tokens with")) {
                return line.to_owned();
            }
            let line = gateway.lines.recv().await.unwrap();
            gateway.log.push_str(&line);
            gateway.log.push('\n');
        }
    })
    .await;
    assert!(
        hint.contains("`cargo run -q -- token"),
        "a debug build in target/: {hint}"
    );

    let address = format!("http://{}", gateway.addr);
    let env = [("GW", BIN)];
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut script_state = String::new(); // the variables blocks set (SUB, PUB)
    let walkthrough = blocks("## Two-minute walkthrough with `curl`");
    assert!(walkthrough.iter().filter(|block| block.lang == "sh").count() >= 6);
    for block in walkthrough.iter().filter(|block| block.lang == "sh") {
        let commands = replace_ids(&block.text, &ids).replace("http://127.0.0.1:8080", &address);
        let script = format!("{PRELUDE}\n{script_state}\n{commands}\ndeclare -p SUB PUB 2>/dev/null || true\n");
        let output = bash(dir.path(), &env, &script);
        let (printed, state) = output.split_at(output.find("declare -").unwrap_or(output.len()));
        if !state.is_empty() {
            script_state = state.to_owned();
        }
        // `# {…}` comments are the outputs of the commands before them, in order.
        let expected: Vec<&str> = block.text.lines().filter_map(|line| line.strip_prefix("# {")).collect();
        let actual = json_values(printed);
        assert_eq!(actual.len(), expected.len(), "outputs of\n{}\n: {printed}", block.text);
        for (expected, actual) in expected.iter().zip(&actual) {
            let expected = format!("{{{expected}");
            let (readme_ids, real_ids) = (ids_in(&expected), ids_in(actual));
            assert_eq!(readme_ids.len(), real_ids.len(), "{expected} vs {actual}");
            for (readme, real) in readme_ids.iter().zip(&real_ids) {
                let known = ids.entry(readme.clone()).or_insert_with(|| real.clone());
                assert_eq!(known, real, "README id {readme} stands for one id throughout");
            }
            let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
            assert_eq!(parse(&replace_ids(&expected, &ids)), parse(actual));
        }
    }

    // What each marked subscriber received: the README's events, in order, first.
    for block in walkthrough.iter().filter(|block| block.subscriber.is_some()) {
        let n = block.subscriber.unwrap();
        let expected = events(&replace_ids(&block.text, &ids));
        let file = dir.path().join(format!("sub{n}.txt"));
        let received = within(&format!("subscriber {n}'s events"), async {
            loop {
                let received = events(&std::fs::read_to_string(&file).unwrap_or_default());
                if received.len() >= expected.len() {
                    return received;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(received[..expected.len()], expected[..], "subscriber {n}");
    }
    let pids = std::fs::read_to_string(dir.path().join("subscribers.pid")).unwrap();
    for pid in pids.lines() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
}

#[tokio::test]
async fn the_revocation_example_runs_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = GatewayProcess::serve(dir.path(), &[("SSE_GATEWAY_DEMO__PUBLISHER", "false")]).await;
    let example = blocks("### Revocation")
        .into_iter()
        .find(|block| block.lang == "sh")
        .expect("the revocation example");
    let script = format!(
        "{PRELUDE}\nADMIN=$(\"$GW\" token --sub ops --admin)\n{}",
        example
            .text
            .replace("http://localhost:8080", &format!("http://{}", gateway.addr))
    );
    let output = bash(dir.path(), &[("GW", BIN)], &script);
    let replies: Vec<serde_json::Value> = json_values(&output)
        .iter()
        .map(|text| serde_json::from_str(text).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{output}");
    assert_eq!(replies[0]["revoked"], serde_json::json!({"sub": "client-42"}));
    assert_eq!(replies[1]["revoked"], serde_json::json!({"jti": "a1b2c3"}));
    let shown: serde_json::Value =
        serde_json::from_str(example.text.lines().find_map(|line| line.strip_prefix("# ")).unwrap()).unwrap();
    let keys = |value: &serde_json::Value| value.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&shown),
        keys(&replies[0]),
        "the reply shown has the real reply's fields"
    );
}

#[test]
fn every_toml_example_is_valid_configuration() {
    let mut checked = 0;
    for block in all_toml_blocks() {
        sse_gateway::config::Config::from_toml(&block.text)
            .unwrap_or_else(|error| panic!("README toml block\n{}\n: {error}", block.text));
        checked += 1;
    }
    assert!(checked >= 3, "{checked} toml blocks");
}

/// Every `toml` block of the README, wherever it is.
fn all_toml_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = README.lines();
    while let Some(line) = lines.next() {
        if line == "```toml" {
            let text: Vec<&str> = lines.by_ref().take_while(|line| *line != "```").collect();
            blocks.push(Block {
                lang: "toml".to_owned(),
                text: text.join("\n"),
                subscriber: None,
            });
        }
    }
    blocks
}
