//! The `runrate` command line: `serve` runs the service, the other commands are gRPC
//! clients of a running one.

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::{Channel, Endpoint};

use crate::{
    domain::Quarter,
    grpc::pb::runrate::v1::{
        CompareProvidersRequest, metrics_service_client::MetricsServiceClient,
    },
    report,
    settings::Settings,
    startup::{Application, shutdown_signal},
};

#[derive(Debug, Parser)]
#[command(
    name = "runrate",
    version,
    about = "The AI business of the cloud hyperscalers, quarter by quarter, over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the figures over gRPC (creates the data directory and loads the seed on first start).
    Serve {
        /// A TOML configuration file (default: runrate.toml in the working directory, if any).
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
}

#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// The runrate gRPC server to ask.
    #[arg(
        long = "server",
        value_name = "URL",
        env = "RUNRATE_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    url: String,
}

impl ServerArgs {
    async fn connect(&self) -> anyhow::Result<Channel> {
        Endpoint::from_shared(self.url.clone())
            .with_context(|| {
                format!(
                    "`{}` is not a server URL (expected e.g. http://127.0.0.1:50051)",
                    self.url
                )
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .with_context(|| format!("cannot reach the runrate server at {}", self.url))
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Report {
            period,
            server,
            json,
        } => print_report(period, &server, json).await,
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    init_tracing(&settings.log.filter);
    let application = Application::build(settings).await?;
    application.run_until(shutdown_signal()).await
}

fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

async fn print_report(
    period: Option<String>,
    server: &ServerArgs,
    json: bool,
) -> anyhow::Result<()> {
    let period = match period {
        Some(text) => format!("periods/{}", Quarter::parse(&text)?.id()),
        None => String::new(),
    };
    let mut client = MetricsServiceClient::new(server.connect().await?);
    let comparison = client
        .compare_providers(CompareProvidersRequest { period })
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report::render_json(&comparison))?
        );
    } else {
        print!("{}", report::render_table(&comparison));
    }
    Ok(())
}
