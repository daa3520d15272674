//! Command line: `sse-gateway serve` and `sse-gateway token`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::Claims;
use crate::auth::keys::{DEFAULT_SECRET_FILE, ensure_secret_file, hs256_secret};
use crate::auth::mint::{SigningKey, mint};
use crate::config::{Algorithm, Config};
use crate::server::{self, Listeners};
use crate::shutdown;
use crate::stream::StreamPattern;

/// Authenticated, multi-topic Server-Sent Events gateway.
#[derive(Debug, Parser)]
#[command(name = "sse-gateway", version = crate::VERSION, about)]
pub struct Cli {
    /// Configuration file (default: ./config.toml when present). Environment
    /// variables `SSE_GATEWAY_<SECTION>__<KEY>` override its keys.
    #[arg(long, global = true, env = "SSE_GATEWAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Mint an access token with the configured key (for local use and tests).
    Token(Box<TokenArgs>),
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (`sub` claim).
    #[arg(long, default_value = "cli")]
    pub sub: String,
    /// Stream pattern the token may subscribe to (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub subscribe: Vec<String>,
    /// Stream pattern the token may publish to (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
    /// Lifetime, e.g. `15m`, `1h`, `30d`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Issuer (`iss`); defaults to `auth.issuer`.
    #[arg(long)]
    pub iss: Option<String>,
    /// Audience (`aud`); defaults to `auth.audience`.
    #[arg(long)]
    pub aud: Vec<String>,
    /// Algorithm; defaults to the first of `auth.algorithms`.
    #[arg(long, value_parser = parse_algorithm)]
    pub alg: Option<Algorithm>,
    /// PEM private key, required for RS256, ES256 and EdDSA.
    #[arg(long, value_name = "PATH")]
    pub private_key: Option<PathBuf>,
    /// Key id (`kid` header), for gateways that find keys by id (`auth.jwks_url`).
    #[arg(long)]
    pub kid: Option<String>,
    /// Token id (`jti`), so this one token can be revoked.
    #[arg(long)]
    pub jti: Option<String>,
    /// Grant `admin` (may call `POST /revocations`).
    #[arg(long)]
    pub admin: bool,
}

fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    match text.to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EDDSA" => Ok(Algorithm::EdDSA),
        _ => Err(format!("unsupported algorithm `{text}` (HS256, RS256, ES256, EdDSA)")),
    }
}

/// `serve`: make sure an HS256 secret exists, bind, run until Ctrl-C or SIGTERM.
///
/// # Errors
/// When keys cannot be prepared, an address cannot be bound or the server fails.
pub async fn serve(mut config: Config) -> anyhow::Result<()> {
    prepare_hs256_secret(&mut config)?;
    let open_file_limit = server::raise_open_file_limit();
    let listeners = Listeners::bind(&config).await?;
    tracing::info!(
        addr = %listeners.main.local_addr()?,
        open_file_limit,
        metrics_addr = ?listeners.metrics.as_ref().map(tokio::net::TcpListener::local_addr),
        backend = ?config.backend.kind,
        tls = config.server.tls.enabled(),
        version = crate::VERSION,
        "sse-gateway listening"
    );
    server::run(config, listeners, shutdown::os_signal()).await?;
    Ok(())
}

/// With HS256 enabled and no secret configured, never fall back to a well-known
/// secret: create a random one in `.sse-gateway-secret` (or reuse it) and say how
/// to mint tokens. The secret itself is never logged.
fn prepare_hs256_secret(config: &mut Config) -> anyhow::Result<()> {
    let auth = &mut config.auth;
    if !auth.algorithms.contains(&Algorithm::HS256) || auth.hs256_secret.is_some() || auth.hs256_secret_file.is_some() {
        return Ok(());
    }
    let path = Path::new(DEFAULT_SECRET_FILE);
    if ensure_secret_file(path)? {
        let mint = token_command();
        tracing::warn!(
            file = DEFAULT_SECRET_FILE,
            "no HS256 secret configured: generated a random one (mode 0600). \
             Mint tokens with `{mint} --subscribe '*' --publish '*'`; \
             set auth.hs256_secret_file or SSE_GATEWAY_AUTH__HS256_SECRET in production"
        );
    } else {
        tracing::info!(file = DEFAULT_SECRET_FILE, "using the HS256 secret generated earlier");
    }
    auth.hs256_secret_file = Some(path.to_owned());
    Ok(())
}

/// How to run `token` with this same binary: `cargo run` when it was built in a
/// cargo target directory (with `--release` for a release build), else
/// `sse-gateway` when that is what `PATH` finds, else the binary's own path.
pub fn token_command() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "sse-gateway token".to_owned();
    };
    let parent = exe.parent().and_then(Path::file_name).and_then(|name| name.to_str());
    let in_target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .is_some_and(|name| name == "target");
    match parent {
        Some("release") if in_target => "cargo run -q --release -- token".to_owned(),
        Some("debug") if in_target => "cargo run -q -- token".to_owned(),
        _ => {
            let on_path = std::env::var_os("PATH")
                .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("sse-gateway") == exe));
            if on_path {
                "sse-gateway token".to_owned()
            } else {
                format!("{} token", exe.display())
            }
        }
    }
}

/// `token`: sign claims from the flags with the configured key.
///
/// # Errors
/// When no key is available or a pattern is invalid.
pub fn mint_token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let alg = args
        .alg
        .or_else(|| config.auth.algorithms.first().copied())
        .unwrap_or(Algorithm::HS256);
    let key = match (alg, &args.private_key) {
        (Algorithm::HS256, _) => {
            let mut auth = config.auth.clone();
            if auth.hs256_secret.is_none()
                && auth.hs256_secret_file.is_none()
                && Path::new(DEFAULT_SECRET_FILE).exists()
            {
                auth.hs256_secret_file = Some(DEFAULT_SECRET_FILE.into());
            }
            let Some(secret) = hs256_secret(&auth)? else {
                bail!(
                    "no HS256 secret: run `sse-gateway serve` once to generate {DEFAULT_SECRET_FILE}, \
                     or set auth.hs256_secret_file / SSE_GATEWAY_AUTH__HS256_SECRET"
                );
            };
            SigningKey::hs256(secret.expose())
        }
        (_, Some(path)) => SigningKey::from_pem_file(alg, path)
            .with_context(|| format!("reading the {alg:?} private key {}", path.display()))?,
        (_, None) => bail!("{alg:?} tokens are signed with a private key: pass --private-key PATH"),
    };
    let key = match &args.kid {
        Some(kid) => key.with_kid(kid),
        None => key,
    };
    let patterns = |list: &[String]| -> anyhow::Result<Vec<StreamPattern>> {
        list.iter()
            .map(|text| StreamPattern::try_new(text).with_context(|| format!("invalid stream pattern `{text}`")))
            .collect()
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: Some(args.sub.clone()),
        exp: Some(now + args.ttl.as_secs()),
        iat: Some(now),
        jti: args.jti.clone(),
        nbf: None,
        admin: args.admin,
        iss: args.iss.clone().or_else(|| config.auth.issuer.clone()),
        aud: if args.aud.is_empty() {
            config.auth.audience.clone()
        } else {
            args.aud.clone()
        },
        subscribe: patterns(&args.subscribe)?,
        publish: patterns(&args.publish)?,
    };
    Ok(mint(&claims, &key)?)
}
