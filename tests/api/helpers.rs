//! Starts the real server on a free port with a fresh data directory, and hands out
//! generated gRPC clients connected to it over TCP.

use std::{net::SocketAddr, path::PathBuf, sync::Once};

use runrate::{
    api::metrics_service_client::MetricsServiceClient,
    settings::{ListenAddress, Settings},
    startup::Application,
};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestServer {
    pub address: SocketAddr,
    pub data_dir: PathBuf,
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
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            data_dir,
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
