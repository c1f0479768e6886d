//! Configuration: the settings' structs with their defaults, layered from code, then an
//! optional TOML file, then environment variables `RUNRATE__SECTION__KEY`. No file or
//! variable is needed to run. The checks across keys are in `validate`, the value types
//! (addresses, durations, secrets, origins) in `values`.

mod secret_files;

pub use secret_files::read_secret_file;
mod validate;
mod values;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use values::{
    CorsOrigins, DatabaseUrl, ListenAddress, OptionalListenAddress, Secret, TextDuration,
    TrustedProxies,
};

/// The file read from the working directory when no `--config` is given.
pub const DEFAULT_CONFIG_FILE: &str = "runrate.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the SQLite database, the emails written as files and the generated admin
    /// token live.
    pub data_dir: PathBuf,
    pub grpc: GrpcSettings,
    pub database: DatabaseSettings,
    pub load: LoadSettings,
    pub watch: WatchSettings,
    pub admin: AdminSettings,
    pub http: HttpSettings,
    pub newsletter: NewsletterSettings,
    pub mail: MailSettings,
    pub delivery: DeliverySettings,
    pub webhook: WebhookSettings,
    pub log: LogSettings,
    pub metrics: MetricsSettings,
    pub tracing: TracingSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcSettings {
    /// Address the gRPC (and gRPC-Web) server listens on.
    pub listen: ListenAddress,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Longest a request may run; a shorter client `grpc-timeout` wins.
    pub request_timeout: TextDuration,
    /// How long shutdown waits for requests in flight before closing connections.
    pub shutdown_timeout: TextDuration,
    /// Open connections at most; 0 sizes the cap from the open-files limit. At the cap,
    /// a new connection closes the quietest open one.
    pub max_connections: usize,
    /// A connection that has sent nothing by then (not even the HTTP/2 preface) is closed.
    pub handshake_timeout: TextDuration,
    /// HTTP/2 pings this often find dead peers; one unanswered for `keepalive_timeout`
    /// closes the connection, and so does a connection with no traffic for twice the
    /// interval plus the timeout.
    pub keepalive_interval: TextDuration,
    pub keepalive_timeout: TextDuration,
    /// Connections are asked to go away after this long (clients reconnect at once, and
    /// watches resume), and closed after `max_connection_age_grace` more.
    pub max_connection_age: TextDuration,
    pub max_connection_age_grace: TextDuration,
    /// Proxies in front of the gRPC side whose `x-forwarded-for` names the client.
    pub trusted_proxies: TrustedProxies,
    /// PEM files of the certificate chain and private key for TLS on the gRPC listener
    /// (read again when they change); empty: plain HTTP/2.
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DATABASE`; empty means
    /// `runrate.db` in the data directory.
    pub url: DatabaseUrl,
    /// A file holding the URL instead, password and all (a Docker or Kubernetes secret).
    pub url_file: PathBuf,
    /// On PostgreSQL, how often a replica checks for loads made through another one.
    pub refresh_interval: TextDuration,
    /// How often the database is checked for gRPC health (a check taking longer fails):
    /// while it is unreachable, NewsletterService and AdminService report NOT_SERVING.
    pub health_check_interval: TextDuration,
    /// Connections to PostgreSQL this process keeps at most.
    pub max_connections: u32,
    /// Whether `runrate serve` applies the migrations it brings as it starts. Off, it
    /// refuses a database that needs them: for upgrades where `runrate migrate` runs
    /// first and the replicas follow.
    pub migrate_on_start: bool,
    /// SQLite: the database file grows no larger than this many bytes (0: no limit).
    /// Writes past it fail as on a full disk, and succeed again once space is freed.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSettings {
    /// Largest figures file accepted, in bytes.
    pub max_file_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchSettings {
    /// How often an idle WatchLoads stream gets a heartbeat.
    pub heartbeat_interval: TextDuration,
    /// How many loads back a resume token may point; older tokens must list again.
    pub resume_history_loads: u32,
    /// Open WatchLoads streams at most, in all and on one connection.
    pub max_streams: usize,
    pub max_streams_per_connection: usize,
    /// Bytes of recent load events kept encoded for live watchers to share; a watcher
    /// that falls further behind is ended with a resume token.
    pub event_cache_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Bearer token for AdminService. Empty: the server generates one on first start and
    /// keeps it in `<data_dir>/admin-token`, readable by its owner only.
    pub token: Secret,
    /// A file holding the token instead (a Docker or Kubernetes secret).
    pub token_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address of the web side: sign-up page, confirm and unsubscribe links.
    pub listen: ListenAddress,
    /// The address readers reach the web side at, used in every link in emails.
    pub public_base_url: String,
    /// Open connections at most; 0 sizes the cap from the open-files limit. At the cap,
    /// a new connection closes the quietest open one.
    pub max_connections: usize,
    /// A request's headers must arrive within this; a connection sending nothing at all
    /// is closed after it too.
    pub header_read_timeout: TextDuration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: TextDuration,
    /// Web pages on these origins (`https://dashboard.example`, separated by commas, or
    /// `*` for any) may call the gRPC-Web and HTTP APIs from a browser; empty for none.
    pub cors_allowed_origins: CorsOrigins,
    /// Proxies in front of the web side whose `X-Forwarded-For` names the client (for
    /// the sign-up limit, logs and traces); empty: every client is its connection's peer.
    pub trusted_proxies: TrustedProxies,
    /// PEM files of the certificate chain and private key for HTTPS on the web side
    /// (read again when they change); empty: plain HTTP.
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewsletterSettings {
    /// How long a confirmation link stays valid.
    pub confirmation_ttl: TextDuration,
    /// A pending address gets at most one confirmation email per this window.
    pub confirmation_resend_window: TextDuration,
    /// Sign-ups allowed per client IP (IPv6 by /64) per `subscribe_rate_window`.
    pub subscribe_rate_limit: u32,
    pub subscribe_rate_window: TextDuration,
}

/// Where emails go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailTransport {
    /// Each email as an `.eml` file under `<data_dir>/mail`: no mail server needed.
    File,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    pub transport: MailTransport,
    /// The sender, e.g. `runrate <newsletter@example.com>`.
    pub from: String,
    /// An address for `List-Unsubscribe: <mailto:…>` as well as the link; empty for none.
    pub unsubscribe_mailto: String,
    pub smtp: SmtpSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Empty for no authentication.
    pub username: String,
    pub password: Secret,
    /// A file holding the password instead (a Docker or Kubernetes secret).
    pub password_file: PathBuf,
    /// Long-lived connections kept open to the server.
    pub pool_size: u32,
    pub connect_timeout: TextDuration,
    /// Longest one email may take, from MAIL FROM to the server's final answer.
    pub send_timeout: TextDuration,
    /// Messages one connection carries before it is closed and a new one opened
    /// (providers cap it: SendGrid near 5,000).
    pub max_messages_per_connection: u32,
    /// How long a connection is used before it is closed and a new one opened.
    pub max_connection_age: TextDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Emails sent at once.
    pub concurrency: u32,
    /// Deliveries a worker claims at a time.
    pub batch_size: u32,
    /// Emails a lane may send before their results are recorded, so that one commit
    /// records many; a crash (`kill -9`) sends at most this many per lane again.
    pub max_unrecorded: u32,
    /// Attempts before a delivery that keeps failing transiently is given up as failed.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each attempt, up to `retry_max`.
    pub retry_base: TextDuration,
    pub retry_max: TextDuration,
    /// How long a claimed delivery is held before another worker may take it over.
    pub lease: TextDuration,
    /// How often the worker looks for due deliveries when not woken by a load.
    pub poll_interval: TextDuration,
    /// Emails sent per second at most, by all lanes and all processes on one database
    /// together; 0 for no limit.
    pub max_rate: u32,
    /// Emails sent per `quota_window` at most (a provider's daily quota); 0 for none.
    pub quota: u64,
    pub quota_window: TextDuration,
}

/// POSTs to webhook endpoints, which go through the delivery outbox (its lanes, retries
/// and lease) beside email.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Longest one POST may take, connecting through to the response's status; a receiver
    /// slower than this is tried again later.
    pub timeout: TextDuration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter such as `info` or `runrate=debug,info`; `RUST_LOG` overrides it.
    pub filter: String,
    /// `text` for people, `json` (one object per line) for log collectors.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where Prometheus scrapes `/metrics`: its own listener, apart from the public ones.
    /// Empty: no metrics.
    pub listen: OptionalListenAddress,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingSettings {
    /// An OTLP/gRPC collector such as `http://127.0.0.1:4317` that spans are exported to.
    /// Empty: none are.
    pub otlp_endpoint: String,
    /// The share of traces begun here that are exported, 0 to 1; a trace whose caller
    /// sampled it (the `traceparent` flag) is exported whatever this says.
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            data_dir: PathBuf::from("runrate-data"),
            grpc: GrpcSettings {
                listen: ListenAddress(SocketAddr::from(([127, 0, 0, 1], 50051))),
                max_concurrent_streams: 200,
                request_timeout: TextDuration(Duration::from_secs(30)),
                shutdown_timeout: TextDuration(Duration::from_secs(10)),
                max_connections: 0,
                handshake_timeout: TextDuration(Duration::from_secs(10)),
                keepalive_interval: TextDuration(Duration::from_secs(30)),
                keepalive_timeout: TextDuration(Duration::from_secs(10)),
                max_connection_age: TextDuration(Duration::from_secs(30 * 60)),
                max_connection_age_grace: TextDuration(Duration::from_secs(30)),
                trusted_proxies: TrustedProxies::default(),
                tls_certificate: PathBuf::new(),
                tls_key: PathBuf::new(),
            },
            database: DatabaseSettings {
                url: DatabaseUrl::default(),
                url_file: PathBuf::new(),
                refresh_interval: TextDuration(Duration::from_millis(250)),
                health_check_interval: TextDuration(Duration::from_secs(5)),
                max_connections: 8,
                migrate_on_start: true,
                max_bytes: 0,
            },
            load: LoadSettings {
                max_file_bytes: 1024 * 1024,
            },
            watch: WatchSettings {
                heartbeat_interval: TextDuration(Duration::from_secs(15)),
                resume_history_loads: 1000,
                max_streams: 10_000,
                max_streams_per_connection: 100,
                event_cache_bytes: 64 * 1024 * 1024,
            },
            admin: AdminSettings {
                token: Secret::default(),
                token_file: PathBuf::new(),
            },
            http: HttpSettings {
                listen: ListenAddress(SocketAddr::from(([127, 0, 0, 1], 8080))),
                public_base_url: "http://127.0.0.1:8080".into(),
                max_connections: 0,
                header_read_timeout: TextDuration(Duration::from_secs(10)),
                idle_timeout: TextDuration(Duration::from_secs(60)),
                cors_allowed_origins: CorsOrigins::default(),
                trusted_proxies: TrustedProxies::default(),
                tls_certificate: PathBuf::new(),
                tls_key: PathBuf::new(),
            },
            newsletter: NewsletterSettings {
                confirmation_ttl: TextDuration(Duration::from_secs(72 * 3600)),
                confirmation_resend_window: TextDuration(Duration::from_secs(30 * 60)),
                subscribe_rate_limit: 25,
                subscribe_rate_window: TextDuration(Duration::from_secs(5 * 60)),
            },
            mail: MailSettings {
                transport: MailTransport::File,
                from: "runrate <newsletter@localhost>".into(),
                unsubscribe_mailto: String::new(),
                smtp: SmtpSettings {
                    host: "127.0.0.1".into(),
                    port: 25,
                    tls: SmtpTls::None,
                    username: String::new(),
                    password: Secret::default(),
                    password_file: PathBuf::new(),
                    pool_size: 4,
                    connect_timeout: TextDuration(Duration::from_secs(10)),
                    send_timeout: TextDuration(Duration::from_secs(60)),
                    max_messages_per_connection: 1000,
                    max_connection_age: TextDuration(Duration::from_secs(10 * 60)),
                },
            },
            delivery: DeliverySettings {
                concurrency: 4,
                batch_size: 100,
                max_unrecorded: 32,
                max_attempts: 8,
                retry_base: TextDuration(Duration::from_secs(30)),
                retry_max: TextDuration(Duration::from_secs(3600)),
                lease: TextDuration(Duration::from_secs(300)),
                poll_interval: TextDuration(Duration::from_secs(5)),
                max_rate: 0,
                quota: 0,
                quota_window: TextDuration(Duration::from_secs(24 * 3600)),
            },
            webhook: WebhookSettings {
                timeout: TextDuration(Duration::from_secs(10)),
            },
            log: LogSettings {
                filter: "info".into(),
                format: LogFormat::Text,
            },
            metrics: MetricsSettings {
                listen: OptionalListenAddress(None),
            },
            tracing: TracingSettings {
                otlp_endpoint: String::new(),
                sample_ratio: 1.0,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(String);

impl DeliverySettings {
    /// Whether a send rate or a quota limits sending. Each email is then settled and
    /// recorded before the next takes its turn: the rate spaces emails exactly, and the
    /// quota counts what was recorded.
    pub fn is_paced(&self) -> bool {
        self.max_rate > 0 || self.quota > 0
    }
}

impl Settings {
    /// Layers defaults, `file` (or `runrate.toml` in the working directory when it exists)
    /// and the environment. `file` must exist when given.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        Self::load_from(file, std::env::vars())
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_from(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let defaults = config::Config::try_from(&Settings::default())
            .map_err(|err| SettingsError(err.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        builder = match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(SettingsError(format!(
                        "configuration file {} does not exist",
                        path.display()
                    )));
                }
                builder.add_source(config::File::from(path).format(config::FileFormat::Toml))
            }
            None => builder.add_source(
                config::File::with_name(DEFAULT_CONFIG_FILE)
                    .format(config::FileFormat::Toml)
                    .required(false),
            ),
        };
        let environment: config::Map<String, String> = environment
            .into_iter()
            .filter(|(key, _)| key.starts_with("RUNRATE__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("RUNRATE")
                .prefix_separator("__")
                .separator("__")
                .source(Some(environment)),
        );
        let mut settings: Settings = builder
            .build()
            .and_then(|config| config.try_deserialize())
            .map_err(|err| SettingsError(explain_environment_key(err.to_string())))?;
        settings.read_secret_files()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> DatabaseUrl {
        if self.database.url.expose().is_empty() {
            DatabaseUrl::new(format!(
                "sqlite://{}",
                self.data_dir.join(DATABASE_FILE).display()
            ))
        } else {
            self.database.url.clone()
        }
    }
}

/// The SQLite file in the data directory when no `database.url` is given.
const DATABASE_FILE: &str = "runrate.db";

/// 32 characters of the token alphabet carry ~190 bits or more: past guessing over the
/// network, and the length of `openssl rand -hex 16`.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// config names keys as `grpc.listen`; say which variable that is, too.
fn explain_environment_key(message: String) -> String {
    if let Some(start) = message.find("for key `") {
        let rest = &message[start + 9..];
        if let Some(end) = rest.find('`') {
            let key = &rest[..end];
            let variable = format!("RUNRATE__{}", key.replace('.', "__").to_uppercase());
            return format!("{message} (set in the file as `{key}`, or as {variable})");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("runrate.toml");
        std::fs::write(&missing, "").unwrap();
        let settings = Settings::load_from(Some(&missing), env(&[])).unwrap();
        assert_eq!(settings.grpc.listen.0.to_string(), "127.0.0.1:50051");
        assert_eq!(settings.data_dir, PathBuf::from("runrate-data"));
        assert_eq!(
            settings.database_url().expose(),
            "sqlite://runrate-data/runrate.db"
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runrate.toml");
        std::fs::write(
            &file,
            "[grpc]\nlisten = \"127.0.0.1:6000\"\nshutdown_timeout = \"3s\"\n",
        )
        .unwrap();
        let settings = Settings::load_from(
            Some(&file),
            env(&[("RUNRATE__GRPC__LISTEN", "0.0.0.0:7000")]),
        )
        .unwrap();
        assert_eq!(settings.grpc.listen.0.to_string(), "0.0.0.0:7000");
        assert_eq!(settings.grpc.shutdown_timeout.0, Duration::from_secs(3));
    }

    #[test]
    fn a_bad_value_names_its_key_and_the_expected_form() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runrate.toml");
        std::fs::write(&file, "").unwrap();
        let err = Settings::load_from(Some(&file), env(&[("RUNRATE__GRPC__LISTEN", "localhost")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc.listen"), "{err}");
        assert!(err.contains("IP:PORT"), "{err}");
        assert!(err.contains("RUNRATE__GRPC__LISTEN"), "{err}");

        let err = Settings::load_from(
            Some(&file),
            env(&[("RUNRATE__GRPC__SHUTDOWN_TIMEOUT", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("grpc.shutdown_timeout") && err.contains("10s"),
            "{err}"
        );

        for (key, value, named) in [
            (
                "RUNRATE__TRACING__SAMPLE_RATIO",
                "1.5",
                "tracing.sample_ratio",
            ),
            (
                "RUNRATE__TRACING__OTLP_ENDPOINT",
                "127.0.0.1:4317",
                "tracing.otlp_endpoint",
            ),
            (
                "RUNRATE__METRICS__LISTEN",
                "localhost:9464",
                "metrics.listen",
            ),
            (
                "RUNRATE__ADMIN__TOKEN",
                "short-token-0123456789",
                "admin.token",
            ),
            (
                "RUNRATE__HTTP__CORS_ALLOWED_ORIGINS",
                "https://dashboard.example/app",
                "http.cors_allowed_origins",
            ),
        ] {
            let err = Settings::load_from(Some(&file), env(&[(key, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{key}={value}: {err}");
        }
        let metrics_off =
            Settings::load_from(Some(&file), env(&[("RUNRATE__METRICS__LISTEN", "")]))
                .expect("empty is off");
        assert_eq!(metrics_off.metrics.listen.0, None);
    }

    #[test]
    fn cors_origins_may_be_a_list_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runrate.toml");
        std::fs::write(
            &file,
            "[http]\ncors_allowed_origins = [\"https://a.example\", \"https://b.example\"]\n",
        )
        .unwrap();
        let settings = Settings::load_from(Some(&file), env(&[])).expect("a list in TOML");
        assert_eq!(
            settings.http.cors_allowed_origins,
            CorsOrigins::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runrate.toml");
        std::fs::write(&file, "[grpc]\nlistne = \"127.0.0.1:1\"\n").unwrap();
        let err = Settings::load_from(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listne"), "{err}");
    }
}
