//! Starts the real server on a free port with a fresh data directory, and hands out
//! generated gRPC clients connected to it over TCP.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Once},
};

use runrate::{
    api::{
        LoadFiguresRequest, LoadFiguresResponse, admin_service_client::AdminServiceClient,
        metrics_service_client::MetricsServiceClient,
    },
    settings::{ListenAddress, Settings},
    startup::Application,
    store::Store,
};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestServer {
    pub address: SocketAddr,
    pub http_address: SocketAddr,
    pub data_dir: PathBuf,
    pub store: Arc<dyn Store>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: removes the data directory.
    _temp: Option<TempDir>,
}

fn init_test_log() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .init();
        }
    });
}

pub fn test_settings(data_dir: PathBuf) -> Settings {
    let mut settings = Settings {
        data_dir,
        ..Settings::default()
    };
    settings.grpc.listen = ListenAddress(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings.http.listen = ListenAddress(SocketAddr::from(([127, 0, 0, 1], 0)));
    settings
}

impl TestServer {
    /// A server on a new, empty data directory.
    pub async fn start() -> TestServer {
        let temp = tempfile::tempdir().expect("create a temporary data directory");
        let mut server = TestServer::start_with(test_settings(temp.path().to_path_buf())).await;
        server._temp = Some(temp);
        server
    }

    pub async fn start_with(settings: Settings) -> TestServer {
        init_test_log();
        let data_dir = settings.data_dir.clone();
        let application = Application::build(settings)
            .await
            .expect("the server starts");
        let address = application.grpc_address();
        let http_address = application.http_address();
        let store = application.store();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            http_address,
            data_dir,
            store,
            stop: Some(stop),
            task: Some(task),
            _temp: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect()
            .await
            .expect("connect to the test server")
    }

    pub async fn metrics(&self) -> MetricsServiceClient<Channel> {
        MetricsServiceClient::new(self.channel().await)
    }

    /// Stops the server and waits until it has, keeping the data directory.
    pub async fn stop(mut self) -> Option<TempDir> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task does not panic")
                .expect("the server shuts down cleanly");
        }
        self._temp.take()
    }
}

impl TestServer {
    /// Stops the server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestServer {
        let data_dir = self.data_dir.clone();
        let temp = self.stop().await;
        let mut server = TestServer::start_with(test_settings(data_dir)).await;
        server._temp = temp;
        server
    }
}

/// The example figures files under `tests/figures/`.
pub fn figures_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/figures")
        .join(name)
}

impl TestServer {
    /// The admin token the server generated into its data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("the server wrote its admin token")
            .trim()
            .to_owned()
    }

    /// Calls LoadFigures with the given bytes and token.
    pub async fn load_with_token(
        &self,
        file_name: &str,
        content: Vec<u8>,
        validate_only: bool,
        token: Option<&str>,
    ) -> Result<LoadFiguresResponse, tonic::Status> {
        let mut request = tonic::Request::new(LoadFiguresRequest {
            file_name: file_name.into(),
            content,
            validate_only,
        });
        if let Some(token) = token {
            let value = format!("Bearer {token}").parse().expect("a header value");
            request.metadata_mut().insert("authorization", value);
        }
        let mut admin = AdminServiceClient::new(self.channel().await);
        admin
            .load_figures(request)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Loads an example file from `tests/figures/` with the right token.
    pub async fn load_example(&self, name: &str) -> Result<LoadFiguresResponse, tonic::Status> {
        let content = std::fs::read(figures_file(name)).expect("read the example file");
        let token = self.admin_token();
        self.load_with_token(name, content, false, Some(&token))
            .await
    }

    pub async fn dump(&self) -> String {
        self.store.dump().await.expect("dump the store")
    }
}

/// Settings for a server that mails through `smtp`, retrying quickly.
pub fn smtp_settings(data_dir: PathBuf, smtp: SocketAddr) -> Settings {
    use runrate::settings::{MailTransport, TextDuration};
    use std::time::Duration;
    let mut settings = test_settings(data_dir);
    settings.mail.transport = MailTransport::Smtp;
    settings.mail.smtp.host = smtp.ip().to_string();
    settings.mail.smtp.port = smtp.port();
    settings.mail.smtp.send_timeout = TextDuration(Duration::from_millis(800));
    settings.mail.smtp.connect_timeout = TextDuration(Duration::from_secs(2));
    settings.delivery.retry_base = TextDuration(Duration::from_millis(50));
    settings.delivery.retry_max = TextDuration(Duration::from_millis(200));
    settings.delivery.poll_interval = TextDuration(Duration::from_millis(50));
    settings.delivery.lease = TextDuration(Duration::from_secs(2));
    settings
}

impl TestServer {
    /// A server on a new data directory that mails through `smtp`.
    pub async fn start_with_smtp(smtp: SocketAddr) -> TestServer {
        let temp = tempfile::tempdir().expect("create a temporary data directory");
        let mut server =
            TestServer::start_with(smtp_settings(temp.path().to_path_buf(), smtp)).await;
        server._temp = Some(temp);
        server
    }

    pub async fn newsletter(
        &self,
    ) -> runrate::api::newsletter_service_client::NewsletterServiceClient<Channel> {
        runrate::api::newsletter_service_client::NewsletterServiceClient::new(self.channel().await)
    }

    /// An admin call's request, with the bearer token.
    pub fn admin_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = format!("Bearer {}", self.admin_token())
            .parse()
            .expect("a header value");
        request.metadata_mut().insert("authorization", value);
        request
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Inserts `count` confirmed subscribers `reader{n}@example.com` straight into the
    /// database, as a fixture: signing up 10,000 readers through the API would test
    /// nothing more.
    pub async fn seed_confirmed_subscribers(&self, count: u32) {
        let url = format!("sqlite://{}", self.data_dir.join("runrate.db").display());
        let pool = sqlx::SqlitePool::connect(&url)
            .await
            .expect("open the test database");
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
             INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us) \
             SELECT 'reader' || i || '@example.com', 'confirmed', 'en', 1, 0, 0 FROM n",
        )
        .bind(count)
        .execute(&pool)
        .await
        .expect("seed subscribers");
        pool.close().await;
    }
}

impl TestServer {
    /// Keeps a data directory alive as long as this server (after a restart on it).
    pub fn keep(&mut self, temp: Option<TempDir>) {
        self._temp = temp;
    }
}
