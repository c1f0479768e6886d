//! The `runrate` commands: `serve` runs the service, the others are gRPC clients of a
//! running one. Their arguments are in `args`, the report's table in `report`, reading
//! mailboxes for `ingest-feedback` in `mailbox`.

mod args;
mod mailbox;
mod report;

use std::path::{Path, PathBuf};

use anyhow::Context;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_types::StatusExt;

use crate::{
    app::{Application, shutdown_signal},
    auth::TOKEN_FILE_NAME,
    domain::Quarter,
    grpc::pb::runrate::v1::{
        CheckFiguresFileRequest, CompareProvidersRequest, GetDeliveryReportRequest,
        LoadFiguresRequest, RetryFailedDeliveriesRequest, RevisionReason,
        admin_service_client::AdminServiceClient, metrics_service_client::MetricsServiceClient,
    },
    settings::{Settings, read_secret_file},
    store::Store,
    telemetry::traces,
    text_table::printable,
};

pub use args::Cli;
use args::{Command, ServerArgs, TokenArgs, WebhookAction};

/// An admin request with its bearer token.
fn authorized<T>(message: T, bearer: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    request
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::Migrate { config } => migrate(config).await,
        Command::Backup {
            destination,
            config,
        } => backup(&destination, config).await,
        Command::Report {
            period,
            server,
            json,
        } => print_report(period, &server, json).await,
        Command::Load {
            file,
            dry_run,
            server,
            token,
        } => load_figures(&file, dry_run, &server, &token).await,
        Command::Health { server } => check_health(&server).await,
        Command::IngestFeedback {
            paths,
            server,
            token,
        } => ingest_feedback(&paths, &server, &token).await,
        Command::Deliveries {
            load,
            retry_failed,
            server,
            token,
        } => print_deliveries(load, retry_failed, &server, &token).await,
        Command::Webhooks {
            action,
            server,
            token,
        } => manage_webhooks(action, &server, &token).await,
    }
}

async fn manage_webhooks(
    action: WebhookAction,
    server: &ServerArgs,
    token: &TokenArgs,
) -> anyhow::Result<()> {
    use crate::grpc::pb::runrate::v1::{
        CreateWebhookRequest, DeleteWebhookRequest, ListWebhooksRequest, Webhook,
    };
    let bearer = token.bearer(server)?;
    let mut client = AdminServiceClient::new(server.connect().await?);
    let status_error =
        |status: tonic::Status| anyhow::anyhow!("{}: {}", status.code(), status.message());
    match action {
        WebhookAction::Create {
            url,
            secret,
            secret_file,
        } => {
            let secret = match secret_file {
                Some(file) => read_secret_file("--secret-file", &file)?,
                None => secret.unwrap_or_default(),
            };
            let webhook = Webhook {
                url,
                secret,
                ..Webhook::default()
            };
            let created = client
                .create_webhook(authorized(
                    CreateWebhookRequest {
                        webhook: Some(webhook),
                    },
                    &bearer,
                ))
                .await
                .map_err(status_error)?
                .into_inner();
            println!("{}  {}", created.name, printable(&created.url));
            println!("secret: {}", created.secret);
        }
        WebhookAction::List => {
            let mut page_token = String::new();
            loop {
                let listed = client
                    .list_webhooks(authorized(
                        ListWebhooksRequest {
                            page_size: 0,
                            page_token,
                        },
                        &bearer,
                    ))
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for webhook in &listed.webhooks {
                    println!("{}  {}", webhook.name, printable(&webhook.url));
                }
                if listed.next_page_token.is_empty() {
                    break;
                }
                page_token = listed.next_page_token;
            }
        }
        WebhookAction::Delete { webhook } => {
            let id = webhook.strip_prefix("webhooks/").unwrap_or(&webhook);
            let id: u64 = id.parse().with_context(|| {
                format!("`{webhook}` is not a webhook (expected a number such as 3, or webhooks/3)")
            })?;
            let name = format!("webhooks/{id}");
            client
                .delete_webhook(authorized(
                    DeleteWebhookRequest { name: name.clone() },
                    &bearer,
                ))
                .await
                .map_err(status_error)?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

async fn check_health(server: &ServerArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let status = HealthClient::new(server.connect().await?)
        .check(HealthCheckRequest::default())
        .await
        .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        anyhow::bail!(
            "the server at {} is {}",
            server.url()?,
            status.as_str_name()
        );
    }
    println!("SERVING");
    Ok(())
}

async fn ingest_feedback(
    paths: &[PathBuf],
    server: &ServerArgs,
    token: &TokenArgs,
) -> anyhow::Result<()> {
    use crate::grpc::pb::runrate::v1::{
        IngestMailFeedbackRequest, SubscriberState, ingest_mail_feedback_response::Kind,
    };
    let bearer = token.bearer(server)?;
    let mut client = AdminServiceClient::new(server.connect().await?);
    let (mut taken, mut refused) = (0, 0);
    for path in paths {
        for message in mailbox::read_messages(path)? {
            let request = authorized(
                IngestMailFeedbackRequest {
                    message: message.bytes,
                },
                &bearer,
            );
            match client.ingest_mail_feedback(request).await {
                Ok(response) => {
                    let outcome = response.into_inner();
                    let kind = match outcome.kind() {
                        Kind::Bounce => "bounce",
                        Kind::SoftBounce => "soft bounce",
                        Kind::Complaint => "complaint",
                        Kind::NotAFailure | Kind::Unspecified => "not a failure",
                    };
                    let effect = match outcome.state() {
                        SubscriberState::Unspecified => "unchanged".to_owned(),
                        state => format!(
                            "now {}",
                            state
                                .as_str_name()
                                .trim_start_matches("SUBSCRIBER_STATE_")
                                .to_ascii_lowercase()
                        ),
                    };
                    println!(
                        "{}: {kind} ({}): {} ({}) is {effect}",
                        message.origin,
                        printable(&outcome.detail),
                        printable(&outcome.email),
                        outcome.delivery
                    );
                    taken += 1;
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    println!(
                        "{}: not taken: {}",
                        message.origin,
                        printable(status.message())
                    );
                    refused += 1;
                }
                Err(status) => anyhow::bail!(
                    "{}: {}: {}",
                    message.origin,
                    status.code(),
                    status.message()
                ),
            }
        }
    }
    println!("{taken} reports taken, {refused} not taken");
    Ok(())
}

async fn print_deliveries(
    load: Option<String>,
    retry_failed: bool,
    server: &ServerArgs,
    token: &TokenArgs,
) -> anyhow::Result<()> {
    let load = match load {
        None => String::new(),
        Some(text) => {
            let id = text.strip_prefix("loads/").unwrap_or(&text);
            let id: u64 = id.parse().with_context(|| {
                format!("`{text}` is not a load (expected a number such as 2, or loads/2)")
            })?;
            format!("loads/{id}")
        }
    };
    let bearer = token.bearer(server)?;
    let mut client = AdminServiceClient::new(server.connect().await?);
    let status_error =
        |status: tonic::Status| anyhow::anyhow!("{}: {}", status.code(), status.message());
    if retry_failed {
        let retried = client
            .retry_failed_deliveries(authorized(
                RetryFailedDeliveriesRequest { load: load.clone() },
                &bearer,
            ))
            .await
            .map_err(status_error)?
            .into_inner()
            .deliveries_retried;
        println!("{retried} failed deliveries are due again.");
    }
    let report = client
        .get_delivery_report(authorized(
            GetDeliveryReportRequest {
                name: delivery_report_name(&load),
            },
            &bearer,
        ))
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "Updates of {}: {} recipients",
        report.load, report.recipients
    );
    println!(
        "  sent {}, pending {}, retrying {}, failed {}, skipped {}",
        report.sent, report.pending, report.retrying, report.failed, report.skipped
    );
    if !report.failures.is_empty() {
        println!("Not delivered yet:");
        for failure in &report.failures {
            println!(
                "  {:<8}  {}  ({} attempts): {}",
                failure.state,
                printable(&failure.email),
                failure.attempts,
                printable(&failure.last_error)
            );
        }
    }
    Ok(())
}

/// The delivery report of `load` (`loads/2`), or of the latest load when none is named.
fn delivery_report_name(load: &str) -> String {
    match load {
        "" => String::new(),
        load => format!("{load}/deliveryReport"),
    }
}

async fn load_figures(
    file: &std::path::Path,
    dry_run: bool,
    server: &ServerArgs,
    token: &TokenArgs,
) -> anyhow::Result<()> {
    let content = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let file_name = file.file_name().map_or_else(
        || file.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    let bearer = token.bearer(server)?;
    let mut request = tonic::Request::new(LoadFiguresRequest {
        file_name: file_name.clone(),
        content: content.clone(),
        validate_only: dry_run,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let mut client = AdminServiceClient::new(server.connect().await?);
    let response = match client.load_figures(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            let violations = status
                .get_details_bad_request()
                .map(|bad| bad.field_violations)
                .unwrap_or_default();
            if violations.is_empty() {
                anyhow::bail!("{}: {}", status.code(), status.message());
            }
            let total = status
                .get_details_error_info()
                .and_then(|info| info.metadata.get("error_count")?.parse().ok())
                .unwrap_or(violations.len());
            // The status lists the first errors only; the rest come in a response body.
            let mut descriptions: Vec<String> =
                violations.into_iter().map(|v| v.description).collect();
            if descriptions.len() < total {
                let mut request = tonic::Request::new(CheckFiguresFileRequest {
                    file_name: file_name.clone(),
                    content,
                });
                request.metadata_mut().insert("authorization", bearer);
                let checked = client
                    .check_figures_file(request)
                    .await
                    .map_err(|status| anyhow::anyhow!("{}: {}", status.code(), status.message()))?
                    .into_inner();
                if !checked.errors.is_empty() {
                    descriptions = checked.errors.into_iter().map(|e| e.description).collect();
                }
            }
            for description in &descriptions {
                eprintln!("{}", printable(description));
            }
            anyhow::bail!(
                "{file_name} was rejected with {} error(s); nothing was written",
                total.max(descriptions.len())
            );
        }
    };
    let counts = format!(
        "{} facts added, {} revised, {} unchanged, {} definitions changed",
        response.facts_added,
        response.facts_revised,
        response.facts_unchanged,
        response.definitions_changed
    );
    match &response.load {
        _ if response.validate_only => {
            println!("{file_name} is valid. Loading it would give: {counts}. Nothing was written.")
        }
        Some(load) => {
            println!("Loaded {file_name} as {}: {counts}.", load.name);
            // New facts are many and need no explanation; revisions each get a line.
            for change in load.changes.iter().filter(|c| c.revision > 1) {
                let reason = RevisionReason::try_from(change.revision_reason)
                    .ok()
                    .filter(|r| *r != RevisionReason::Unspecified)
                    .map(|r| format!(" ({})", reason_text(r)))
                    .unwrap_or_default();
                println!(
                    "  revised {} to revision {}{reason}",
                    change.fact, change.revision
                );
            }
        }
        None => println!(
            "Nothing to load: {file_name} changes nothing ({counts}). No load was created."
        ),
    }
    Ok(())
}

fn reason_text(reason: RevisionReason) -> &'static str {
    match reason {
        RevisionReason::Unspecified => "",
        RevisionReason::Restated => "restated",
        RevisionReason::Corrected => "corrected",
        RevisionReason::EstimateReplaced => "estimate replaced by a reported figure",
    }
}

async fn migrate(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings =
        Settings::load(config.as_deref()).context("cannot read the server's configuration")?;
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            settings.data_dir.display()
        )
    })?;
    let url = settings.database_url();
    let (store, before) = Store::open_migrating(&settings.database, &url, true)
        .await
        .with_context(|| format!("cannot migrate the database {url}"))?;
    let after = store.schema().await?;
    if before.database == after.database {
        println!(
            "The database is at schema {}: nothing to migrate.",
            after.database
        );
    } else {
        println!(
            "Migrated the database from schema {} to {}.",
            before.database, after.database
        );
    }
    Ok(())
}

/// The database's file in a backup.
const BACKUP_DATABASE: &str = "runrate.db";

async fn backup(destination: &Path, config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings =
        Settings::load(config.as_deref()).context("cannot read the server's configuration")?;
    let url = settings.database_url();
    if !url.expose().starts_with("sqlite:") {
        anyhow::bail!(
            "runrate backup copies the embedded SQLite database; {url} is PostgreSQL: back it up with pg_dump (docs/operations.md, Backups)"
        );
    }
    std::fs::create_dir_all(destination)
        .with_context(|| format!("cannot create {}", destination.display()))?;
    let database = destination.join(BACKUP_DATABASE);
    if database.exists() {
        anyhow::bail!(
            "{} holds a backup already; name a new directory",
            destination.display()
        );
    }
    Store::backup_sqlite(&url, &database)
        .await
        .with_context(|| format!("cannot back up {url}"))?;
    let size = std::fs::metadata(&database)?.len();
    let mut copied = vec![format!("{BACKUP_DATABASE} ({size} bytes)")];
    let token = settings.data_dir.join(TOKEN_FILE_NAME);
    if token.is_file() {
        let copy = destination.join(TOKEN_FILE_NAME);
        std::fs::copy(&token, &copy).with_context(|| format!("cannot copy {}", token.display()))?;
        copied.push(TOKEN_FILE_NAME.to_owned());
    }
    println!(
        "Backed up {url} into {}: {}. To restore, copy them into an empty data directory.",
        destination.display(),
        copied.join(", ")
    );
    Ok(())
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = Settings::load(config.as_deref())?;
    let tracing = traces::init(&settings.log, &settings.tracing)?;
    let application = Application::build(settings).await?;
    let served = application.run_until(shutdown_signal()).await;
    tracing.shutdown();
    served
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
