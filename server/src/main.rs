//! The server binary: parse the configuration, bind, run until SIGINT or
//! SIGTERM; or, with the `token` subcommand, print a development token.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = match server::Config::load_from(std::env::args_os()) {
        Ok(config) => config,
        // As clap prints them (and `--help`, `--version`).
        Err(server::LoadError::Args(error)) => error.exit(),
        Err(error) => return Err(error.into()),
    };
    if let Some(command) = &config.command {
        return match command {
            server::Command::Token {
                sub,
                ttl,
                client_name,
            } => print_token(&config, sub, *ttl, client_name.as_deref()),
            other => anyhow::bail!("unknown command {other:?}"),
        };
    }
    let listener = server::bind(config.addr).with_context(|| format!("binding {}", config.addr))?;
    let addr = listener.local_addr()?;
    tracing::info!("listening on http://{addr} (UI at /, WebSocket at /ws and /echo)");
    server::run(listener, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// `server token --sub alice --ttl 1h`: a token signed with the configured
/// HS256 secret, with the configured issuer and audience, on stdout.
fn print_token(
    config: &server::Config,
    sub: &str,
    ttl: std::time::Duration,
    client_name: Option<&str>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let secret = config.signing_secret()?;
    let mut claims = server::auth::Claims::expiring_in(sub, ttl);
    if let Some(name) = client_name {
        claims = claims.with_client_name(name);
    }
    if let Some(issuer) = &config.jwt_issuer {
        claims = claims.with_issuer(issuer);
    }
    if let Some(audience) = &config.jwt_audience {
        claims = claims.with_audience(audience);
    }
    let token = server::auth::mint_hs256(&secret, &claims)?;
    writeln!(std::io::stdout(), "{token}").context("writing the token")?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {err}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
