//! Records the git revision the binary is built from (`sse-gateway --version`,
//! `sse_build_info{revision}`): `SSE_GATEWAY_REVISION` when set (a Docker build
//! without `.git` passes it as a build argument), else `git rev-parse`, else
//! `unknown`. A build from a modified tree says so with `-dirty`.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=SSE_GATEWAY_REVISION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/index");
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed=.git/{head}");
    }
    let revision = std::env::var("SSE_GATEWAY_REVISION")
        .ok()
        .filter(|value| !value.is_empty())
        .or_else(|| {
            let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|out| !out.is_empty());
            Some(if dirty { format!("{commit}-dirty") } else { commit })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SSE_GATEWAY_REVISION={revision}");
}
