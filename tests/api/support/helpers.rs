//! Starts the real server on free ports with a fresh data directory and a fresh database
//! (an SQLite file, or on the PostgreSQL run a new database that is dropped afterwards),
//! and hands out generated gRPC clients connected to it over TCP.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Once},
    time::Duration,
};

use runrate::{
    api::{
        LoadFiguresRequest, LoadFiguresResponse, admin_service_client::AdminServiceClient,
        metrics_service_client::MetricsServiceClient,
        newsletter_service_client::NewsletterServiceClient,
    },
    app::Application,
    outbox::{self, OutboxWorker},
    settings::{DatabaseUrl, ListenAddress, MailTransport, Settings, TextDuration},
    store::Store,
};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// Which database a test binary runs the suite on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The variable naming a PostgreSQL server for the PostgreSQL run; each test gets a new
/// database on it.
pub const POSTGRES_URL_VARIABLE: &str = "RUNRATE_TEST_DATABASE_URL";

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

/// Few connections per test server: tests run side by side on one PostgreSQL server.
const POSTGRES_CONNECTIONS_PER_SERVER: u32 = 4;

/// PostgreSQL makes concurrent DROP DATABASE statements wait on each other's signal
/// barriers for tens of seconds: this test process creates and drops one at a time.
static DATABASE_DDL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A PostgreSQL database made for one test, dropped when the test is done.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl TestDatabase {
    async fn create() -> TestDatabase {
        let admin_url = std::env::var(POSTGRES_URL_VARIABLE)
            .unwrap_or_else(|_| panic!("the PostgreSQL run needs {POSTGRES_URL_VARIABLE}"));
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).expect("randomness");
        let name = format!(
            "{}{}",
            database_prefix(),
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let mut connection = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to the PostgreSQL test server");
        drop_leftovers_once(&mut connection).await;
        {
            let _one_at_a_time = DATABASE_DDL.lock().await;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut connection)
                .await
                .expect("create a test database");
        }
        let (base, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
        let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
        let url = if query.is_empty() {
            format!("{server}/{name}")
        } else {
            format!("{server}/{name}?{query}")
        };
        TestDatabase {
            admin_url,
            name,
            url,
        }
    }
}

/// Test databases of this process are named with this prefix.
fn database_prefix() -> String {
    format!("runrate_test_{}_", std::process::id())
}

/// Drops the test databases earlier runs could not drop before they exited: those of
/// processes no longer running (another test run on the same server keeps its own).
async fn drop_leftovers_once(connection: &mut sqlx::PgConnection) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let _one_at_a_time = DATABASE_DDL.lock().await;
        let leftovers: Vec<String> = sqlx::query_scalar(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'runrate\\_test\\_%' AND datname NOT LIKE $1",
        )
        .bind(format!("{}%", database_prefix()))
        .fetch_all(&mut *connection)
        .await
        .unwrap_or_default();
        let owner_exited = |name: &str| {
            let pid = name
                .trim_start_matches("runrate_test_")
                .split('_')
                .next()
                .unwrap_or_default();
            pid.parse::<u32>()
                .is_ok_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        for name in leftovers.into_iter().filter(|name| owner_exited(name)) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut *connection)
                .await;
        }
    })
    .await;
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Not joined: the server's connections live on this test's runtime, and the drop
        // must wait for them to close, which they do once the test returns. A database
        // still here when the process exits goes at the start of the next run.
        std::thread::spawn(move || {
            let _one_at_a_time = DATABASE_DDL.blocking_lock();
            let runtime = tokio::runtime::Runtime::new().ok()?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut connection)
                    .await
                    .ok()
            })
        });
    }
}

/// A test's data directory and, on PostgreSQL, its database; both go when it is dropped.
pub struct TestDir {
    temp: TempDir,
    database: Option<TestDatabase>,
}

impl TestDir {
    pub async fn new() -> TestDir {
        let temp = tempfile::tempdir().expect("create a temporary data directory");
        let database = match crate::BACKEND {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await),
        };
        TestDir { temp, database }
    }

    /// For the CLI tests, which run the binary with no configuration in this directory.
    pub fn blocking_new() -> TestDir {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(TestDir::new())
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn is_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// Settings for a server on free ports, with this directory and database.
    pub fn settings(&self) -> Settings {
        let mut settings = Settings {
            data_dir: self.path().to_path_buf(),
            ..Settings::default()
        };
        settings.grpc.listen = ListenAddress(SocketAddr::from(([127, 0, 0, 1], 0)));
        settings.http.listen = ListenAddress(SocketAddr::from(([127, 0, 0, 1], 0)));
        if let Some(database) = &self.database {
            settings.database.url = DatabaseUrl::new(database.url.clone());
            settings.database.max_connections = POSTGRES_CONNECTIONS_PER_SERVER;
        }
        settings
    }

    /// Settings for a server that mails through `smtp`, retrying quickly.
    pub fn smtp_settings(&self, smtp: SocketAddr) -> Settings {
        let mut settings = self.settings();
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

    /// Environment for `runrate serve` run in this directory with no other configuration.
    pub fn serve_environment(&self) -> Vec<(String, String)> {
        let mut environment = vec![
            ("RUNRATE__GRPC__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("RUNRATE__HTTP__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        if let Some(database) = &self.database {
            environment.push(("RUNRATE__DATABASE__URL".to_owned(), database.url.clone()));
            environment.push((
                "RUNRATE__DATABASE__MAX_CONNECTIONS".to_owned(),
                POSTGRES_CONNECTIONS_PER_SERVER.to_string(),
            ));
        }
        environment
    }

    /// A connection to the database of a server run in `data_dir`, for fixtures.
    pub async fn fixture_connection(&self, data_dir: &Path) -> sqlx::AnyConnection {
        sqlx::any::install_default_drivers();
        let url = match &self.database {
            None => format!("sqlite://{}", data_dir.join("runrate.db").display()),
            Some(database) => database.url.clone(),
        };
        sqlx::AnyConnection::connect(&url)
            .await
            .expect("open the test database")
    }

    /// Inserts `count` confirmed subscribers `reader{n}@example.com` straight into the
    /// database of a server run in `data_dir`, as a fixture: signing up 10,000 readers
    /// through the API would test nothing more.
    pub async fn seed_confirmed_subscribers(&self, data_dir: &Path, count: u32) {
        let mut connection = self.fixture_connection(data_dir).await;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO subscribers (email, state, language, follows_all, created_at_us, updated_at_us) \
             SELECT 'reader' || i || '@example.com', 'confirmed', 'en', $2, 0, 0 FROM n",
        )
        .bind(i64::from(count))
        .bind(true)
        .execute(&mut connection)
        .await
        .expect("seed subscribers");
    }

    /// Changes a subscriber's address, for tests that need one address to behave differently.
    pub async fn rename_subscriber(&self, data_dir: &Path, from: &str, to: &str) {
        let mut connection = self.fixture_connection(data_dir).await;
        sqlx::query("UPDATE subscribers SET email = $1 WHERE email = $2")
            .bind(to)
            .bind(from)
            .execute(&mut connection)
            .await
            .expect("rename");
    }
}

pub struct TestServer {
    pub address: SocketAddr,
    pub http_address: SocketAddr,
    pub data_dir: PathBuf,
    pub store: Arc<Store>,
    pub outbox: Arc<OutboxWorker>,
    settings: Settings,
    /// Whether the outbox is worked in the background; otherwise tests drain it.
    lanes: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: removes the data directory and the database.
    dir: Option<TestDir>,
}

impl TestServer {
    /// A server on a new, empty data directory and database.
    pub async fn start() -> TestServer {
        let dir = TestDir::new().await;
        let settings = dir.settings();
        TestServer::start_in(dir, settings).await
    }

    /// A server on a new data directory and database that mails through `smtp`.
    pub async fn start_with_smtp(smtp: SocketAddr) -> TestServer {
        let dir = TestDir::new().await;
        let settings = dir.smtp_settings(smtp);
        TestServer::start_in(dir, settings).await
    }

    /// A server with `settings` (from `dir`), owning `dir` from now on.
    pub async fn start_in(dir: TestDir, settings: Settings) -> TestServer {
        let mut server = TestServer::start_with(settings).await;
        server.dir = Some(dir);
        server
    }

    /// A server with `settings` (from `dir`) that works its outbox in the background, as
    /// in production, for tests about concurrent lanes and stopping mid-way.
    pub async fn start_in_with_lanes(dir: TestDir, settings: Settings) -> TestServer {
        let mut server = TestServer::start_with_lanes(settings).await;
        server.dir = Some(dir);
        server
    }

    /// A server with `settings` that works its outbox in the background, whose directory
    /// and database someone else owns.
    pub async fn start_with_lanes(settings: Settings) -> TestServer {
        TestServer::launch(settings, true, Vec::new()).await
    }

    /// A server with an extra outbox channel beside email.
    pub async fn start_with_channel(channel: Arc<dyn outbox::Channel>) -> TestServer {
        let dir = TestDir::new().await;
        let mut server = TestServer::launch(dir.settings(), false, vec![channel]).await;
        server.dir = Some(dir);
        server
    }

    /// A server with `settings`, whose directory and database someone else owns. Its
    /// outbox is only worked when the test drains it.
    pub async fn start_with(settings: Settings) -> TestServer {
        TestServer::launch(settings, false, Vec::new()).await
    }

    async fn launch(
        settings: Settings,
        lanes: bool,
        channels: Vec<Arc<dyn outbox::Channel>>,
    ) -> TestServer {
        init_test_log();
        let data_dir = settings.data_dir.clone();
        let mut application = Application::build_with_channels(settings.clone(), channels)
            .await
            .expect("the server starts");
        if !lanes {
            application = application.without_outbox_lanes();
        }
        let address = application.grpc_address();
        let http_address = application.http_address();
        let store = application.store();
        let outbox = application.outbox();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until(async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            http_address,
            data_dir,
            store,
            outbox,
            settings,
            lanes,
            stop: Some(stop),
            task: Some(task),
            dir: None,
        }
    }

    pub fn dir(&self) -> &TestDir {
        self.dir
            .as_ref()
            .expect("a server started by the helpers owns its directory")
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

    pub async fn newsletter(&self) -> NewsletterServiceClient<Channel> {
        NewsletterServiceClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Stops the server and waits until it has, handing back its directory and database.
    pub async fn stop(mut self) -> (Option<TestDir>, Settings) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the server task does not panic")
                .expect("the server shuts down cleanly");
        }
        (self.dir.take(), self.settings.clone())
    }

    /// Stops the server and starts a new one on the same directory and database.
    pub async fn restart(self) -> TestServer {
        let lanes = self.lanes;
        let (dir, settings) = self.stop().await;
        let mut server = TestServer::launch(settings, lanes, Vec::new()).await;
        server.dir = dir;
        server
    }

    /// The admin token the server generated into its data directory.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin-token"))
            .expect("the server wrote its admin token")
            .trim()
            .to_owned()
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
        self.admin()
            .await
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

    /// Works the outbox until nothing is left to do: whatever is due is sent, and each
    /// retry is let fall due at once instead of being waited for.
    pub async fn settle_outbox(&self) {
        let mut moment = std::time::SystemTime::now();
        for _ in 0..1000 {
            let worked = self
                .outbox
                .drain_at(moment)
                .await
                .expect("drain the outbox");
            match self.store.next_delivery_due().await.expect("next due") {
                Some(due) if due > moment || worked > 0 => moment = moment.max(due),
                _ => return,
            }
        }
        panic!("the outbox did not settle");
    }

    /// The delivery report of `load` (`loads/2`).
    pub async fn delivery_report(&self, load: &str) -> runrate::api::DeliveryReport {
        self.admin()
            .await
            .get_delivery_report(self.admin_request(runrate::api::GetDeliveryReportRequest {
                name: format!("{load}/deliveryReport"),
            }))
            .await
            .expect("a delivery report")
            .into_inner()
    }

    /// Works the outbox until nothing is left, then reports on `load`.
    pub async fn settled_report(&self, load: &str) -> runrate::api::DeliveryReport {
        self.settle_outbox().await;
        let report = self.delivery_report(load).await;
        assert_eq!((report.pending, report.retrying), (0, 0), "{report:?}");
        report
    }

    pub async fn dump(&self) -> String {
        self.store.dump().await.expect("dump the store")
    }

    pub async fn seed_confirmed_subscribers(&self, count: u32) {
        self.dir()
            .seed_confirmed_subscribers(&self.data_dir, count)
            .await;
    }

    pub async fn rename_subscriber(&self, from: &str, to: &str) {
        self.dir().rename_subscriber(&self.data_dir, from, to).await;
    }
}

/// The example figures files under `tests/figures/`.
pub fn figures_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/figures")
        .join(name)
}

/// `runrate serve`, the built binary, in its own process; killed when dropped.
pub struct ServeProcess {
    pub child: std::process::Child,
    /// The gRPC URL it serves, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    /// The address of its web side.
    pub http_address: Option<SocketAddr>,
    /// Where it serves Prometheus metrics, when it does (logged before the other two).
    pub prometheus_address: Option<SocketAddr>,
    /// Every line it wrote to stdout and stderr so far.
    output: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts the binary in `cwd` with `environment` (which should choose free ports) and
    /// waits for the log line that says where it serves gRPC.
    pub fn start(cwd: &Path, environment: impl IntoIterator<Item = (String, String)>) -> Self {
        let (process, lines) = ServeProcess::spawn(cwd, environment);
        process.until_serving(&lines)
    }

    /// Starts the binary under a limit of `fd_limit` open files, soft and hard.
    pub fn start_with_fd_limit(
        cwd: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
        fd_limit: u32,
    ) -> Self {
        let (process, lines) = ServeProcess::spawn_command(cwd, environment, Some(fd_limit));
        process.until_serving(&lines)
    }

    /// Waits, reading `lines`, for the log lines that say where it serves, written as
    /// text or as JSON.
    pub fn until_serving(mut self, lines: &std::sync::mpsc::Receiver<String>) -> Self {
        while self.url.is_empty() || self.http_address.is_none() {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("runrate serve logs that it is serving");
            let (message, address) = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(event) => (
                    event["message"].as_str().unwrap_or_default().to_owned(),
                    event["address"].as_str().unwrap_or_default().to_owned(),
                ),
                Err(_) => match line.split_once(" address=") {
                    Some((before, address)) => (before.to_owned(), address.trim().to_owned()),
                    None => continue,
                },
            };
            if message.ends_with("serving gRPC") {
                self.url = format!("http://{address}");
            } else if message.ends_with("serving HTTP") {
                self.http_address = address.parse().ok();
            } else if message.ends_with("serving Prometheus metrics") {
                self.prometheus_address = address.parse().ok();
            }
        }
        self
    }

    /// Starts the binary and hands back its output lines as they come, without waiting.
    pub fn spawn(
        cwd: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        ServeProcess::spawn_command(cwd, environment, None)
    }

    fn spawn_command(
        cwd: &Path,
        environment: impl IntoIterator<Item = (String, String)>,
        fd_limit: Option<u32>,
    ) -> (Self, std::sync::mpsc::Receiver<String>) {
        use std::io::{BufRead, BufReader, Read};
        let binary = env!("CARGO_BIN_EXE_runrate");
        let mut command = match fd_limit {
            None => std::process::Command::new(binary),
            Some(limit) => {
                let mut shell = std::process::Command::new("sh");
                shell.args([
                    "-c",
                    &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                    binary,
                ]);
                shell
            }
        };
        let mut child = command
            .arg("serve")
            .current_dir(cwd)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(environment)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start runrate serve");
        let output = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        let streams: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for stream in streams {
            let output = output.clone();
            let lines_tx = lines_tx.clone();
            std::thread::spawn(move || {
                // Read to the end, or the server blocks on a full pipe.
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().expect("output lock").push(line.clone());
                    let _ = lines_tx.send(line);
                }
            });
        }
        let process = ServeProcess {
            child,
            url: String::new(),
            http_address: None,
            prometheus_address: None,
            output,
        };
        (process, lines_rx)
    }

    /// Everything it wrote so far, one line each.
    pub fn output(&self) -> String {
        self.output.lock().expect("output lock").join("\n")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Loads the example file `name` from `tests/figures/` through the server at `url`, with
/// the admin `token`: for servers run as their own process.
pub async fn load_example_through(url: &str, token: &str, name: &str) {
    let mut request = tonic::Request::new(runrate::api::LoadFiguresRequest {
        file_name: name.into(),
        content: std::fs::read(figures_file(name)).expect("read the example file"),
        validate_only: false,
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .expect("a header value"),
    );
    AdminServiceClient::connect(url.to_owned())
        .await
        .expect("connect")
        .load_figures(request)
        .await
        .expect("load");
}
