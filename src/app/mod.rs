//! Building and running the service: open the store, load the seed into an empty one,
//! build the read snapshot, bind the gRPC and HTTP ports, start the delivery worker, and
//! serve until told to stop. What watches the database meanwhile is in `watchers`.

mod watchers;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::extract::ConnectInfo;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{server::NamedService, service::interceptor::InterceptedService, transport::Server};
use tonic_health::ServingStatus;

use crate::{
    auth::AdminToken,
    catalog::{ReadSnapshot, SharedSnapshot},
    client_address,
    connections::{self, ConnectionLimits},
    cors,
    figures_file::ParseLimits,
    grpc::{
        AdminApi, MetricsApi, MetricsWithWatch, NewsletterApi, RequireAdminToken, WatchConfig,
        WatchHub,
        pb::{
            self,
            runrate::v1::{
                admin_service_server::AdminServiceServer,
                metrics_service_server::MetricsServiceServer,
                newsletter_service_server::NewsletterServiceServer,
            },
        },
        proto_json,
    },
    http::{self, JsonApi, WebState},
    loading::FigureLoader,
    mail::{EmailChannel, EmailComposer, FeedbackDesk, MAX_FEEDBACK_BYTES, SendPace, build_mailer},
    newsletter::Newsletter,
    outbox::{Channel, OutboxWorker, Wakeup},
    sealing::TokenSealer,
    settings::Settings,
    store::Store,
    telemetry::{self, grpc::GrpcPrometheusLayer},
    tls,
    webhooks::WebhookChannel,
};

/// Largest request message accepted; runrate's requests are small.
const MAX_DECODING_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest response message sent.
const MAX_ENCODING_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Streams a client may reset in error before the connection is closed (the guard of
/// RUSTSEC-2024-0003, which tonic does not set).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Open connections to `/metrics` at most: a scraper or two, and an operator's curl.
const PROMETHEUS_MAX_CONNECTIONS: usize = 16;

pub struct Application {
    settings: Settings,
    grpc_listener: Option<TcpListener>,
    grpc_address: SocketAddr,
    http_listener: Option<TcpListener>,
    http_address: SocketAddr,
    /// Prometheus's own listener, when `metrics.listen` is set.
    prometheus_listener: Option<PrometheusListener>,
    snapshot: SharedSnapshot,
    loader: Arc<FigureLoader>,
    admin_token: Arc<AdminToken>,
    tokens: Arc<TokenSealer>,
    feedback: Arc<FeedbackDesk>,
    /// The open-files limit, raised to its hard limit at start.
    fd_limit: Option<u64>,
    store: Arc<Store>,
    newsletter: Arc<Newsletter>,
    outbox: Arc<OutboxWorker>,
    outbox_wakeup: Wakeup,
    /// Whether `run_until` works the outbox in the background (tests drain it instead).
    outbox_lanes: bool,
    /// TLS on the gRPC and web listeners, where certificates are configured.
    grpc_tls: Option<tokio_rustls::TlsAcceptor>,
    http_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Where `/metrics` is served, and the recorder it renders.
struct PrometheusListener {
    listener: TcpListener,
    address: SocketAddr,
    prometheus: telemetry::PrometheusHandle,
}

async fn bind(
    address: SocketAddr,
    what: &str,
    key: &str,
) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for {what} on {address} ({key})"))?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

impl Application {
    /// Opens (or creates) the store, loads the seed into an empty one, and binds the
    /// ports. Port 0 binds a free port; the `*_address` methods tell which.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_channels(settings, Vec::new()).await
    }

    /// As [`Application::build`], with outbox channels beside email.
    pub async fn build_with_channels(
        settings: Settings,
        extra_channels: Vec<Arc<dyn Channel>>,
    ) -> anyhow::Result<Self> {
        // First: metric handles taken before the recorder exists record nothing.
        let prometheus = settings
            .metrics
            .listen
            .0
            .map(|address| telemetry::prometheus().map(|handle| (address, handle)))
            .transpose()?;
        // gRPC-Web may come over HTTP/1.1; the web side speaks only that.
        let grpc_tls = tls::acceptor(
            &settings.grpc.tls_certificate,
            &settings.grpc.tls_key,
            &[b"h2", b"http/1.1"],
        )
        .context("cannot serve gRPC over TLS")?;
        let http_tls = tls::acceptor(
            &settings.http.tls_certificate,
            &settings.http.tls_key,
            &[b"http/1.1"],
        )
        .context("cannot serve the web side over TLS")?;
        let fd_limit = connections::raise_fd_limit();
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                settings.data_dir.display()
            )
        })?;
        let database_url = settings.database_url();
        let store = Arc::new(
            Store::open(&settings.database, &database_url)
                .await
                .with_context(|| format!("cannot open the database {database_url}"))?,
        );
        let snapshot = ReadSnapshot::default().shared();
        let limits = ParseLimits {
            max_file_bytes: settings.load.max_file_bytes,
        };
        let tokens = Arc::new(TokenSealer::new(
            store
                .token_key()
                .await
                .context("cannot read the server's token key")?,
        ));
        let mailer = build_mailer(&settings.mail, &settings.data_dir)?;
        let composer = Arc::new(EmailComposer::new(
            &settings.mail,
            &settings.http,
            settings.newsletter.confirmation_ttl.0,
            tokens.clone(),
        )?);
        let feedback = Arc::new(FeedbackDesk::new(store.clone(), composer.message_ids()));
        let mut channels: Vec<Arc<dyn Channel>> = vec![Arc::new(EmailChannel::new(
            store.clone(),
            snapshot.clone(),
            mailer,
            composer,
            settings.newsletter.confirmation_ttl.0,
            SendPace::new(store.clone(), &settings.delivery),
        ))];
        let descriptors = proto_json::descriptor_pool()?;
        channels.push(Arc::new(WebhookChannel::new(
            store.clone(),
            snapshot.clone(),
            &settings.webhook,
            Box::new(move |snapshot, load| proto_json::load(&descriptors, snapshot, load)),
        )));
        channels.extend(extra_channels);
        let outbox_wakeup = Wakeup::default();
        let loader = Arc::new(FigureLoader::new(
            store.clone(),
            snapshot.clone(),
            limits,
            channels.clone(),
            outbox_wakeup.clone(),
        ));
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
        } else if let Some(summary) = loader
            .correct_seed()
            .await
            .context("cannot correct the seed figures")?
        {
            tracing::info!(
                facts = summary.facts_revised + summary.facts_added,
                "corrected the figures an earlier version of the seed loaded"
            );
        }
        let admin_token = Arc::new(AdminToken::resolve(
            settings.admin.token.expose(),
            &settings.data_dir,
        )?);

        let newsletter = Arc::new(Newsletter::new(
            store.clone(),
            snapshot.clone(),
            settings.newsletter.clone(),
            outbox_wakeup.clone(),
        ));
        let outbox = Arc::new(OutboxWorker::new(
            store.clone(),
            snapshot.clone(),
            channels,
            settings.delivery.clone(),
            outbox_wakeup.clone(),
        ));

        let (grpc_listener, grpc_address) =
            bind(settings.grpc.listen.0, "gRPC", "grpc.listen").await?;
        let (http_listener, http_address) =
            bind(settings.http.listen.0, "HTTP", "http.listen").await?;
        let prometheus_listener = match prometheus {
            Some((address, handle)) => {
                let (listener, bound) =
                    bind(address, "Prometheus metrics", "metrics.listen").await?;
                Some(PrometheusListener {
                    listener,
                    address: bound,
                    prometheus: handle,
                })
            }
            None => None,
        };
        Ok(Application {
            settings,
            grpc_listener: Some(grpc_listener),
            grpc_address,
            http_listener: Some(http_listener),
            http_address,
            prometheus_listener,
            snapshot,
            loader,
            admin_token,
            tokens,
            fd_limit,
            store,
            newsletter,
            feedback,
            outbox,
            outbox_wakeup,
            outbox_lanes: true,
            grpc_tls,
            http_tls,
        })
    }

    pub fn grpc_address(&self) -> SocketAddr {
        self.grpc_address
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Where `/metrics` is served, when it is.
    pub fn prometheus_address(&self) -> Option<SocketAddr> {
        self.prometheus_listener
            .as_ref()
            .map(|listener| listener.address)
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// The outbox worker, to drain by hand.
    pub fn outbox(&self) -> Arc<OutboxWorker> {
        self.outbox.clone()
    }

    /// Serve without working the outbox in the background: the caller drains it with
    /// [`OutboxWorker::drain`], step by step.
    pub fn without_outbox_lanes(mut self) -> Self {
        self.outbox_lanes = false;
        self
    }

    /// Serves until `shutdown` completes, then lets requests in flight and the emails
    /// being sent finish for at most `grpc.shutdown_timeout` before closing what is left.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let (Some(grpc_listener), Some(http_listener)) =
            (self.grpc_listener.take(), self.http_listener.take())
        else {
            anyhow::bail!("the application is already running");
        };
        let stopping = CancellationToken::new();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_serving::<MetricsServiceServer<MetricsApi>>()
            .await;
        health_reporter
            .set_serving::<NewsletterServiceServer<NewsletterApi>>()
            .await;
        health_reporter
            .set_serving::<AdminServiceServer<AdminApi>>()
            .await;

        tokio::spawn(watchers::report_store_health(
            self.store.clone(),
            health_reporter.clone(),
            self.settings.database.health_check_interval.0,
            stopping.clone(),
        ));
        // One watch hub for gRPC and the JSON API: its caps count both.
        let metrics_service =
            MetricsWithWatch::new(self.metrics_service_server(), self.watch_hub(&stopping));
        let grpc = self.spawn_grpc(
            grpc_listener,
            health_service,
            metrics_service.clone(),
            stopping.clone(),
        )?;
        let http = self.spawn_http(http_listener, metrics_service, stopping.clone())?;
        let prometheus = self.prometheus_listener.take().map(|listener| {
            tracing::info!(address = %listener.address, "serving Prometheus metrics");
            self.spawn_prometheus(listener, stopping.clone())
        });
        let outbox = if self.outbox_lanes {
            tokio::spawn(self.outbox.clone().run(stopping.clone()))
        } else {
            tokio::spawn(async {})
        };
        if self.store.is_shared() {
            tokio::spawn(watchers::follow_other_replicas(
                self.store.clone(),
                self.loader.clone(),
                self.settings.database.refresh_interval.0,
                stopping.clone(),
            ));
        }
        tracing::info!(address = %self.grpc_address, "serving gRPC");
        tracing::info!(address = %self.http_address, "serving HTTP");

        shutdown.await;
        tracing::info!("shutting down");
        health_reporter
            .set_not_serving::<MetricsServiceServer<MetricsApi>>()
            .await;
        stopping.cancel();
        let deadline: Duration = self.settings.grpc.shutdown_timeout.0;
        let all_stopped = async {
            let (grpc, http, outbox) = tokio::join!(grpc, http, outbox);
            grpc.context("the gRPC server task failed")??;
            http.context("the HTTP server task failed")??;
            if let Some(prometheus) = prometheus {
                prometheus
                    .await
                    .context("the Prometheus server task failed")??;
            }
            outbox.context("the outbox worker failed")?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(deadline, all_stopped).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                ?deadline,
                "work was still running at the shutdown deadline; closing what is left"
            ),
        }
        Ok(())
    }

    fn spawn_grpc(
        &self,
        listener: TcpListener,
        health_service: tonic_health::pb::health_server::HealthServer<
            impl tonic_health::pb::health_server::Health,
        >,
        metrics: MetricsWithWatch,
        stopping: CancellationToken,
    ) -> anyhow::Result<JoinHandle<Result<(), tonic::transport::Error>>> {
        let grpc = &self.settings.grpc;
        // Both reflection versions: grpcurl before 1.9 and many other tools still ask v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // So that tools can decode the error details runrate sends.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        let grpc_prometheus = match self.settings.metrics.listen.0 {
            Some(_) => GrpcPrometheusLayer::new(&[
                pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ])
            .context("cannot serve the gRPC methods' Prometheus series")?,
            None => GrpcPrometheusLayer::off(),
        };
        let reflection_v1 = reflection()
            .build_v1()
            .context("cannot build the reflection service")?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .context("cannot build the reflection service")?;
        let newsletter = NewsletterServiceServer::new(NewsletterApi::new(
            self.newsletter.clone(),
            grpc.trusted_proxies.clone(),
        ))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES);
        // A figures file rides in one message; leave room so that a file over the limit
        // still reaches the loader, which names the limit in its answer.
        // A mail feedback report may be up to MAX_FEEDBACK_BYTES.
        let admin_decoding_limit = (self.settings.load.max_file_bytes.saturating_mul(2)
            + 64 * 1024)
            .max(MAX_FEEDBACK_BYTES + 64 * 1024);
        let admin = InterceptedService::new(
            AdminServiceServer::new(AdminApi::new(
                self.loader.clone(),
                self.store.clone(),
                self.tokens.clone(),
                self.newsletter.clone(),
                self.feedback.clone(),
                self.outbox_wakeup.clone(),
            ))
            .max_decoding_message_size(admin_decoding_limit)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES),
            RequireAdminToken(self.admin_token.clone()),
        );
        let router = Server::builder()
            .accept_http1(true)
            .max_concurrent_streams(grpc.max_concurrent_streams)
            .http2_keepalive_interval(Some(grpc.keepalive_interval.0))
            .http2_keepalive_timeout(Some(grpc.keepalive_timeout.0))
            .max_connection_age(grpc.max_connection_age.0)
            .max_connection_age_grace(grpc.max_connection_age_grace.0)
            .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESET_STREAMS))
            .timeout(grpc.request_timeout.0)
            .trace_fn({
                let trusted = Arc::new(grpc.trusted_proxies.clone());
                move |request| telemetry::traces::grpc_span(request, &trusted)
            })
            .layer(cors::CrossOriginOnlyLayer::new(
                &self.settings.http.cors_allowed_origins,
            ))
            .layer(tonic_web::GrpcWebLayer::new())
            // Inside gRPC-Web, so that it sees every call as gRPC.
            .layer(grpc_prometheus)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(metrics)
            .add_service(newsletter)
            .add_service(admin);
        let limits = ConnectionLimits {
            max_connections: self.connection_cap(grpc.max_connections),
            first_byte_timeout: grpc.handshake_timeout.0,
            // Healthy connections see a ping (or a watch heartbeat) well within this.
            idle_timeout: Some(grpc.keepalive_interval.0 * 2 + grpc.keepalive_timeout.0),
        };
        let incoming = connections::accept(
            listener,
            "gRPC",
            limits,
            self.grpc_tls.clone(),
            stopping.clone(),
        );
        Ok(tokio::spawn(router.serve_with_incoming_shutdown(
            incoming,
            async move {
                stopping.cancelled().await;
            },
        )))
    }

    fn spawn_http(
        &self,
        listener: TcpListener,
        metrics: MetricsWithWatch,
        stopping: CancellationToken,
    ) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
        let json_api = JsonApi::new(metrics)
            .context("cannot serve the JSON API from the protos' HTTP rules")?;
        let app = http::security_headers::apply(http::router(WebState {
            newsletter: self.newsletter.clone(),
            snapshot: self.snapshot.clone(),
            feedback: self.feedback.clone(),
            admin_token: self.admin_token.clone(),
            feeds: Arc::default(),
            json_api: Arc::new(json_api),
            base_url: self
                .settings
                .http
                .public_base_url
                .trim_end_matches('/')
                .into(),
        }))
        .layer(cors::layer(&self.settings.http.cors_allowed_origins))
        .layer(axum::middleware::from_fn(telemetry::http::record))
        // Outermost: the span and the handlers see the client it finds.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(self.settings.http.trusted_proxies.clone()),
            client_address::web,
        ));
        let cap = self.connection_cap(self.settings.http.max_connections);
        Ok(self.spawn_web(app, listener, "HTTP", cap, self.http_tls.clone(), stopping))
    }

    /// WatchLoads' streams, ended when `stopping` is cancelled.
    fn watch_hub(&self, stopping: &CancellationToken) -> Arc<WatchHub> {
        let watch = &self.settings.watch;
        WatchHub::new(
            self.snapshot.clone(),
            WatchConfig {
                heartbeat_interval: watch.heartbeat_interval.0,
                resume_history_loads: watch.resume_history_loads,
                shutdown: stopping.clone(),
                tokens: self.tokens.clone(),
                max_streams: watch.max_streams,
                max_streams_per_connection: watch.max_streams_per_connection,
                event_cache_bytes: watch.event_cache_bytes,
            },
        )
    }

    /// The read API's gRPC service, for the gRPC side and the JSON API alike.
    fn metrics_service_server(&self) -> MetricsServiceServer<MetricsApi> {
        MetricsServiceServer::new(MetricsApi::new(self.snapshot.clone(), self.tokens.clone()))
            .max_decoding_message_size(MAX_DECODING_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_ENCODING_MESSAGE_BYTES)
    }

    /// `/metrics` on its own listener, bounded like the web side.
    fn spawn_prometheus(
        &self,
        listener: PrometheusListener,
        stopping: CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        let app = telemetry::router(listener.prometheus, self.store.clone());
        self.spawn_web(
            app,
            listener.listener,
            "metrics",
            PROMETHEUS_MAX_CONNECTIONS,
            None,
            stopping,
        )
    }

    /// Serves `app` on `listener` with the web side's timeouts and `max_connections`.
    fn spawn_web(
        &self,
        app: axum::Router,
        listener: TcpListener,
        what: &'static str,
        max_connections: usize,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stopping: CancellationToken,
    ) -> JoinHandle<anyhow::Result<()>> {
        let settings = &self.settings.http;
        let limits = ConnectionLimits {
            max_connections,
            first_byte_timeout: settings.header_read_timeout.0,
            idle_timeout: Some(settings.idle_timeout.0),
        };
        let incoming = connections::accept(listener, what, limits, tls, stopping.clone());
        tokio::spawn(serve_http(
            app,
            incoming,
            settings.header_read_timeout.0,
            stopping,
        ))
    }

    /// A listener's cap on open connections: configured, or sized from the fd limit.
    fn connection_cap(&self, configured: usize) -> usize {
        if configured > 0 {
            configured
        } else {
            connections::default_cap(self.fd_limit)
        }
    }
}

/// Serves an axum app over HTTP/1 on connections from a bounded listener. axum's own
/// `serve` has neither timeouts nor a connection cap: hyper serves each connection
/// instead.
async fn serve_http(
    app: axum::Router,
    mut incoming: tokio_stream::wrappers::ReceiverStream<std::io::Result<connections::Connection>>,
    header_read_timeout: Duration,
    stopping: CancellationToken,
) -> anyhow::Result<()> {
    let mut connection = hyper::server::conn::http1::Builder::new();
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            _ = stopping.cancelled() => break,
            next = incoming.next() => match next {
                Some(Ok(stream)) => stream,
                Some(Err(_)) => continue,
                None => break,
            },
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(peer))));
        let serving = graceful.watch(connection.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(err) = serving.await {
                tracing::debug!(error = %err, "an HTTP connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
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
