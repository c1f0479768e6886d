//! Building and running the service: open the store, load the seed into an empty one,
//! build the read snapshot, bind the gRPC port and serve until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::{Server, server::TcpIncoming};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::AdminToken,
    figures::ParseLimits,
    grpc::{
        AdminApi, MetricsApi, RequireAdminToken, WatchConfig,
        pb::{
            self,
            runrate::v1::{
                admin_service_server::AdminServiceServer,
                metrics_service_server::MetricsServiceServer,
            },
        },
    },
    loader::FigureLoader,
    settings::Settings,
    snapshot::{ReadSnapshot, SharedSnapshot},
    store,
};

/// Largest request message accepted; runrate's requests are small.
const MAX_DECODING_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest response message sent.
const MAX_ENCODING_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Streams a client may reset in error before the connection is closed (the guard of
/// RUSTSEC-2024-0003, which tonic does not set).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

pub struct Application {
    settings: Settings,
    grpc_listener: TcpListener,
    grpc_address: SocketAddr,
    snapshot: SharedSnapshot,
    loader: Arc<FigureLoader>,
    admin_token: Arc<AdminToken>,
}

impl Application {
    /// Opens (or creates) the store, loads the seed into an empty one, and binds the
    /// gRPC port. Port 0 binds a free port; [`Application::grpc_address`] tells which.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        let database_url = settings.database_url();
        let store = store::open(&database_url)
            .await
            .with_context(|| format!("cannot open the database {database_url}"))?;
        let snapshot = ReadSnapshot::default().shared();
        let limits = ParseLimits {
            max_file_bytes: settings.load.max_file_bytes,
        };
        let loader = Arc::new(FigureLoader::new(store, snapshot.clone(), limits));
        loader
            .refresh_snapshot()
            .await
            .context("cannot read the stored figures")?;
        if let Some(summary) = loader
            .load_seed_if_empty()
            .await
            .context("cannot load the seed figures")?
        {
            tracing::info!(
                facts = summary.facts_added,
                "loaded the seed figures into the new store"
            );
        }
        let admin_token = Arc::new(AdminToken::resolve(
            settings.admin.token.expose(),
            &settings.data_dir,
        )?);
        let listen = settings.grpc.listen.0;
        let grpc_listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen for gRPC on {listen} (grpc.listen)"))?;
        let grpc_address = grpc_listener.local_addr()?;
        Ok(Application {
            settings,
            grpc_listener,
            grpc_address,
            snapshot,
            loader,
            admin_token,
        })
    }

    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    pub fn snapshot(&self) -> SharedSnapshot {
        self.snapshot.clone()
    }

    pub fn loader(&self) -> Arc<FigureLoader> {
        self.loader.clone()
    }

    pub fn store(&self) -> Arc<dyn store::Store> {
        self.loader.store()
    }

    /// Serves until `shutdown` completes, then lets requests in flight finish for at most
    /// `grpc.shutdown_timeout` before dropping the connections that are left.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let grpc = &self.settings.grpc;
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<MetricsServiceServer<MetricsApi>>()
            .await;
        health_reporter
            .set_serving::<AdminServiceServer<AdminApi>>()
            .await;
        // Both reflection versions: grpcurl before 1.9 and many other tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // So that tools can decode the error details runrate sends.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .context("cannot build the reflection service")?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .context("cannot build the reflection service")?;
        let shutting_down = CancellationToken::new();
        let watch = WatchConfig {
            heartbeat_interval: self.settings.watch.heartbeat_interval.0,
            resume_history_loads: self.settings.watch.resume_history_loads,
            shutdown: shutting_down.clone(),
        };
        let metrics = MetricsServiceServer::new(MetricsApi::new(self.snapshot.clone(), watch))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
        // A figures file rides in one message; leave room so that a file over the limit
        // still reaches the loader, which names the limit in its answer.
        let admin_decoding_limit = self.settings.load.max_file_bytes.saturating_mul(2) + 64 * 1024;
        let admin = tonic::service::interceptor::InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(self.loader.clone()))
                .max_decoding_message_size(admin_decoding_limit)
                .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES),
            RequireAdminToken(self.admin_token.clone()),
        );

        let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Server::builder()
            .accept_http1(true)
            .tcp_nodelay(true)
            .max_concurrent_streams(grpc.max_concurrent_streams)
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .timeout(grpc.request_timeout.0)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(metrics)
            .add_service(admin);
        let incoming = TcpIncoming::from(self.grpc_listener).with_nodelay(Some(true));
        let mut server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
            let _ = serving_stopped.await;
        }));
        tracing::info!(address = %self.grpc_address, "serving gRPC");

        shutdown.await;
        tracing::info!("shutting down");
        health_reporter
            .set_not_serving::<MetricsServiceServer<MetricsApi>>()
            .await;
        shutting_down.cancel();
        let _ = stop_serving.send(());
        let deadline: Duration = grpc.shutdown_timeout.0;
        match tokio::time::timeout(deadline, &mut server).await {
            Ok(joined) => joined.context("the gRPC server task failed")??,
            Err(_) => {
                server.abort();
                tracing::warn!(
                    ?deadline,
                    "requests were still running at the shutdown deadline; closing their connections"
                );
            }
        }
        Ok(())
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
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
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
}
