//! The command line's arguments: the commands and their options, and how the client
//! commands find the server and its admin token from them.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};

use crate::{auth::TOKEN_FILE_NAME, settings::Settings};

#[derive(Debug, Parser)]
#[command(
    name = "runrate",
    version,
    about = "The AI business of the cloud hyperscalers, quarter by quarter, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
    /// Serve the figures over gRPC (creates the data directory and loads the seed on first start).
    Serve {
        /// A TOML configuration file (default: runrate.toml in the working directory, if any).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Apply the database migrations this build brings, and nothing else: for upgrades
    /// where the replicas start with database.migrate_on_start off.
    Migrate {
        /// A TOML configuration file (default: runrate.toml in the working directory, if any).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy the embedded database (and the generated admin token) into a directory, while
    /// the server runs: restore by copying them into an empty data directory.
    Backup {
        /// The directory to write (created if missing; an earlier backup in it is kept).
        destination: PathBuf,
        /// The server's TOML configuration file (default: runrate.toml in the working
        /// directory, if any).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the provider comparison for a period, as the article's table shows it.
    Report {
        /// A calendar quarter such as 2026-Q1 (default: the latest with figures).
        period: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load a figures file (a new quarter, or a restatement) into a running server.
    Load {
        /// The figures file (TOML; docs/figures-file.md has the format).
        file: PathBuf,
        /// Check the file and show what it would change, without writing anything.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Take bounces (RFC 3464) and abuse reports (ARF) from a Maildir, an mbox file or
    /// message files: each permanent failure or complaint suppresses the address of the
    /// email it answers. Taking a report twice changes nothing more.
    IngestFeedback {
        /// Maildir directories, mbox files or single messages.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Exit 0 when the server reports SERVING over gRPC health (for container healthchecks).
    Health {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Show how a load's update emails are doing (default: the latest load that sent any).
    Deliveries {
        /// A load id, such as 2 or loads/2.
        load: Option<String>,
        /// Make the failed deliveries due again first (they are re-checked before sending).
        #[arg(long)]
        retry_failed: bool,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Register, list and delete the webhook endpoints every load is POSTed to.
    Webhooks {
        #[command(subcommand)]
        action: WebhookAction,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
}

#[derive(Debug, Subcommand)]
pub(super) enum WebhookAction {
    /// Register an endpoint; prints its name and the secret its POSTs are signed with
    /// (shown this once).
    Create {
        /// An http or https URL.
        url: String,
        /// The signing secret (24 to 256 printable characters; default: generated).
        #[arg(long, env = "RUNRATE_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// A file holding the signing secret instead (a Docker or Kubernetes secret).
        #[arg(long, value_name = "FILE", conflicts_with = "secret")]
        secret_file: Option<PathBuf>,
    },
    /// List the registered endpoints.
    List,
    /// Delete an endpoint (webhooks/3, or 3); POSTs still queued for it are not sent.
    Delete { webhook: String },
}

#[derive(Debug, clap::Args)]
pub(super) struct TokenArgs {
    /// The admin token (default: the server's configuration, `admin.token`, or else the
    /// token file it generated).
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "RUNRATE_ADMIN_TOKEN",
        hide_env_values = true,
        // A generated token may start with a hyphen (base64url).
        allow_hyphen_values = true
    )]
    pub(super) token: Option<String>,
    /// The file the server wrote its generated admin token to (default:
    /// `<data_dir>/admin-token`, with the data directory from the server's
    /// configuration).
    #[arg(long = "token-file", value_name = "FILE")]
    token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The token as given, or as the server's configuration finds it.
    pub(super) fn bearer(&self, server: &ServerArgs) -> anyhow::Result<MetadataValue<Ascii>> {
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => token.trim().to_owned(),
            (None, Some(file)) => read_token_file(file)?,
            (None, None) => {
                let settings = server.settings()?;
                match settings.admin.token.expose().trim() {
                    "" => read_token_file(&settings.data_dir.join(TOKEN_FILE_NAME))?,
                    configured => configured.to_owned(),
                }
            }
        };
        format!("Bearer {token}")
            .parse()
            .context("the admin token has characters a header cannot carry")
    }
}

fn read_token_file(file: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(file).with_context(|| {
        format!(
            "cannot read the admin token from {} (pass --token, set RUNRATE_ADMIN_TOKEN, or point --token-file or the server's configuration at its data directory)",
            file.display()
        )
    })?;
    Ok(token.trim().to_owned())
}

#[derive(Debug, clap::Args)]
pub(super) struct ServerArgs {
    /// The runrate gRPC server to ask (default: where the server's configuration says
    /// it listens, http://127.0.0.1:50051 unless changed).
    #[arg(long = "server", value_name = "URL", env = "RUNRATE_SERVER")]
    url: Option<String>,
    /// The server's configuration file, read for what the other options leave out
    /// (default: runrate.toml in the working directory if any, and the `RUNRATE__…`
    /// variables, as `runrate serve` reads them).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ServerArgs {
    /// The server's own configuration, as `runrate serve` would read it here.
    pub(super) fn settings(&self) -> anyhow::Result<Settings> {
        Settings::load(self.config.as_deref()).context("cannot read the server's configuration")
    }

    pub(super) fn url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.url {
            return Ok(url.clone());
        }
        let listen = self.settings()?.grpc.listen.0;
        Ok(format!("http://{}", reachable(listen)))
    }

    pub(super) async fn connect(&self) -> anyhow::Result<Channel> {
        let url = self.url()?;
        Endpoint::from_shared(url.clone())
            .with_context(|| {
                format!("`{url}` is not a server URL (expected e.g. http://127.0.0.1:50051)")
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("cannot reach the runrate server at {url}"))
    }
}

/// Where a client on this machine reaches a server listening on `listen`: an address
/// that stands for every interface is reached on loopback.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, listen.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, listen.port()).into(),
        _ => listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_that_starts_with_a_hyphen_is_taken_as_the_token() {
        let cli = Cli::try_parse_from(["runrate", "load", "q3.toml", "--token", "-Mx9_token"])
            .unwrap_or_else(|err| panic!("{err}"));
        let Command::Load { token, .. } = cli.command else {
            panic!("not a load: {cli:?}");
        };
        assert_eq!(token.token.as_deref(), Some("-Mx9_token"));
    }
}
