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
        let store = application.store();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
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
