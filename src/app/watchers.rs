//! What runs beside the servers and watches the database: another replica's loads, picked
//! up by polling, and the database's reachability, reported through gRPC health.

// The services and parts these watch are the parent's.
use super::*;

/// Replicas on one database learn of each other's loads by polling the newest load id
/// (one indexed read), and swap in a new snapshot when it moved.
pub(super) async fn follow_other_replicas(
    store: Arc<Store>,
    loader: Arc<FigureLoader>,
    interval: Duration,
    stopping: CancellationToken,
) {
    while !stopping.is_cancelled() {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let head = match store.head_load_id().await {
            Ok(head) => head,
            Err(err) => {
                tracing::warn!(error = %err, "cannot check for loads from other replicas");
                continue;
            }
        };
        if head > loader.snapshot().load().head() {
            match loader.refresh_snapshot().await {
                Ok(()) => {
                    tracing::info!(load = head, "picked up a load made through another replica")
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read a load made through another replica")
                }
            }
        }
    }
}

/// Keeps the health of the services that need the database to its state: with the
/// database unreachable (or too slow to answer within one interval), NewsletterService
/// and AdminService are NOT_SERVING, while MetricsService goes on serving its snapshot.
/// Logs each change once.
pub(super) async fn report_store_health(
    store: Arc<Store>,
    reporter: tonic_health::server::HealthReporter,
    interval: Duration,
    stopping: CancellationToken,
) {
    let mut reachable = true;
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let checked = tokio::time::timeout(interval, store.head_load_id()).await;
        let now_reachable = matches!(checked, Ok(Ok(_)));
        if now_reachable == reachable {
            continue;
        }
        reachable = now_reachable;
        let status = if reachable {
            tracing::info!("the database is reachable again; sign-ups and admin calls are back");
            ServingStatus::Serving
        } else {
            let error = match checked {
                Ok(Err(err)) => err.to_string(),
                _ => format!("no answer within {interval:?}"),
            };
            tracing::error!(%error, "the database is unreachable; sign-ups and admin calls are NOT_SERVING until it is back");
            ServingStatus::NotServing
        };
        reporter
            .set_service_status(
                <NewsletterServiceServer<NewsletterApi> as NamedService>::NAME,
                status,
            )
            .await;
        reporter
            .set_service_status(<AdminServiceServer<AdminApi> as NamedService>::NAME, status)
            .await;
    }
}
