//! The Docker Compose deployment, checked without a Docker engine: every runrate service
//! in `docker-compose.yml` is configured only through variables that are real settings
//! with valid values, and points at the PostgreSQL and Mailpit services of the file; it
//! has no admin token unless the operator gives one, publishes ports on loopback only,
//! and its Prometheus and Grafana read what runrate exports.

use std::{collections::BTreeMap, path::Path};

use runrate::settings::{MailTransport, Settings};
use yaml_rust2::{Yaml, YamlLoader};

fn compose_file() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("read docker-compose.yml");
    YamlLoader::load_from_str(&text)
        .expect("docker-compose.yml is YAML")
        .pop()
        .expect("one document")
}

/// A strong enough token for the tests, as an operator would export it.
const TOKEN: &str = "deployment-test-token-0123456789abcdef";
/// PostgreSQL's password, as an operator would export it.
const POSTGRES_PASSWORD: &str = "0123456789abcdef0123456789abcdef";
/// Every secret the compose file requires, set.
const SECRETS: [(&str, &str); 2] = [
    ("RUNRATE_ADMIN_TOKEN", TOKEN),
    ("POSTGRES_PASSWORD", POSTGRES_PASSWORD),
];

/// `${NAME:-default}` and `${NAME:?error}` as Compose reads them, with only `variables`
/// set; the error of the first required one unset.
fn interpolate(value: &str, variables: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${...}") + start;
        let expression = &rest[start + 2..end];
        let set = |name: &str| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        let value = if let Some((name, default)) = expression.split_once(":-") {
            set(name).unwrap_or_else(|| default.to_owned())
        } else if let Some((name, error)) = expression.split_once(":?") {
            set(name).ok_or_else(|| format!("{name}: {error}"))?
        } else {
            set(expression).unwrap_or_default()
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The environment of each service whose name starts with `runrate`, merge keys applied,
/// with `variables` set in the operator's shell.
fn runrate_environments(
    compose: &Yaml,
    variables: &[(&str, &str)],
) -> Result<BTreeMap<String, Vec<(String, String)>>, String> {
    let services = compose["services"].as_hash().expect("services");
    let mut environments = BTreeMap::new();
    for (name, service) in services {
        let name = name.as_str().expect("a service name");
        if !name.starts_with("runrate") {
            continue;
        }
        // yaml-rust2 keeps `<<` as a key: take the merged mapping's environment.
        let environment = match &service["environment"] {
            Yaml::BadValue => &service["<<"]["environment"],
            own => own,
        };
        let mut pairs = Vec::new();
        for (key, value) in environment
            .as_hash()
            .unwrap_or_else(|| panic!("{name} has an environment mapping"))
        {
            let value = match value {
                Yaml::String(text) => text.clone(),
                Yaml::Integer(number) => number.to_string(),
                other => panic!("{name}: unexpected value {other:?}"),
            };
            pairs.push((
                key.as_str().expect("a name").to_owned(),
                interpolate(&value, variables)?,
            ));
        }
        environments.insert(name.to_owned(), pairs);
    }
    Ok(environments)
}

fn empty_config_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, "").expect("an empty configuration file");
    path
}

#[test]
fn every_runrate_variable_in_the_compose_file_is_a_valid_setting() {
    let compose = compose_file();
    let environments = runrate_environments(&compose, &SECRETS).expect("interpolated");
    assert_eq!(
        environments.len(),
        2,
        "two replicas: {:?}",
        environments.keys()
    );
    for (service, environment) in &environments {
        assert!(
            environment
                .iter()
                .all(|(key, _)| key.starts_with("RUNRATE__")),
            "{service}: only RUNRATE__ variables"
        );
        let empty = empty_config_file("runrate-deployment-test-empty.toml");
        let settings = Settings::load_from(Some(&empty), environment.clone())
            .unwrap_or_else(|err| panic!("{service}: {err}"));
        assert!(
            settings.database.url.expose().starts_with("postgres://"),
            "{service}"
        );
        assert!(
            settings
                .database
                .url
                .expose()
                .contains(&format!(":{POSTGRES_PASSWORD}@postgres:5432/")),
            "{service}: the operator's password, on the compose file's PostgreSQL"
        );
        assert_eq!(settings.mail.transport, MailTransport::Smtp, "{service}");
        assert_eq!(settings.mail.smtp.host, "mailpit", "{service}");
        assert_eq!(settings.mail.smtp.port, 1025, "{service}");
        assert_eq!(settings.admin.token.expose(), TOKEN, "{service}");
        assert_eq!(
            settings.metrics.listen.0.map(|address| address.port()),
            Some(METRICS_PORT),
            "{service}: metrics for Prometheus"
        );
    }
}

/// The port the replicas serve metrics on inside the compose network.
const METRICS_PORT: u16 = 9464;

#[test]
fn without_an_admin_token_the_compose_file_does_not_start_and_a_short_one_is_refused() {
    let compose = compose_file();
    let error = runrate_environments(&compose, &SECRETS[1..]).unwrap_err();
    assert!(error.starts_with("RUNRATE_ADMIN_TOKEN: "), "{error}");
    let short = "0123456789abcdef0123456789abcde";
    let environments =
        runrate_environments(&compose, &[("RUNRATE_ADMIN_TOKEN", short), SECRETS[1]])
            .expect("interpolated");
    let empty = empty_config_file("runrate-deployment-test-empty-3.toml");
    for environment in environments.into_values() {
        let error = Settings::load_from(Some(&empty), environment).unwrap_err();
        assert!(
            error.to_string().contains("`admin.token`") && error.to_string().contains("32"),
            "{error}"
        );
    }
}

#[test]
fn an_unknown_or_invalid_variable_would_be_caught() {
    let empty = empty_config_file("runrate-deployment-test-empty-2.toml");
    let unknown = vec![(
        "RUNRATE__MAIL__SMTP__HOSTNAME".to_owned(),
        "mailpit".to_owned(),
    )];
    assert!(Settings::load_from(Some(&empty), unknown).is_err());
    let invalid = vec![("RUNRATE__MAIL__SMTP__PORT".to_owned(), "smtp".to_owned())];
    assert!(Settings::load_from(Some(&empty), invalid).is_err());
}

#[test]
fn the_compose_file_has_postgres_mailpit_and_published_ports() {
    let compose = compose_file();
    let services = &compose["services"];
    assert!(
        services["postgres"]["healthcheck"]["test"]
            .as_vec()
            .is_some()
    );
    assert!(
        services["postgres"]["volumes"]
            .as_vec()
            .is_some_and(|v| !v.is_empty())
    );
    for replica in ["runrate-a", "runrate-b"] {
        let ports = services[replica]["ports"]
            .as_vec()
            .expect("published ports");
        assert_eq!(ports.len(), 2, "{replica}: gRPC and HTTP");
    }
}

/// Every published port of every service, as Compose reads it with `variables` set.
fn published_ports(variables: &[(&str, &str)]) -> Vec<String> {
    let compose = compose_file();
    let services = compose["services"].as_hash().expect("services");
    let mut published = Vec::new();
    for service in services.values() {
        for port in service["ports"].as_vec().into_iter().flatten() {
            let port = port.as_str().expect("ports written as strings");
            published.push(interpolate(port, variables).expect("no required variable"));
        }
    }
    published
}

#[test]
fn ports_are_published_on_loopback_unless_the_operator_opens_them() {
    let published = published_ports(&[]);
    assert_eq!(published.len(), 7, "{published:?}");
    for port in &published {
        assert!(port.starts_with("127.0.0.1:"), "{port}");
    }
    for port in published_ports(&[("RUNRATE_PUBLISH_ADDRESS", "0.0.0.0")]) {
        assert!(port.starts_with("0.0.0.0:"), "{port}");
    }
}

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

#[test]
fn every_file_the_services_mount_is_in_the_repository() {
    let compose = compose_file();
    let mut mounted = 0;
    for service in compose["services"].as_hash().expect("services").values() {
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let source = volume.as_str().expect("a volume").split(':').next();
            if let Some(file) = source.and_then(|source| source.strip_prefix("./")) {
                assert!(
                    Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists(),
                    "{file}"
                );
                mounted += 1;
            }
        }
    }
    assert_eq!(
        mounted, 4,
        "Prometheus's configuration and alerts, Grafana's provisioning and dashboards"
    );
}

#[test]
fn prometheus_scrapes_every_replica_on_its_metrics_port() {
    let compose = compose_file();
    let config = YamlLoader::load_from_str(&read("deploy/prometheus/prometheus.yml"))
        .expect("YAML")
        .pop()
        .expect("one document");
    let targets: Vec<&str> = config["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_vec()
        .expect("targets")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let replicas = runrate_environments(&compose, &SECRETS).expect("interpolated");
    let expected: Vec<String> = replicas
        .keys()
        .map(|replica| format!("{replica}:{METRICS_PORT}"))
        .collect();
    assert_eq!(targets, expected);
}

#[test]
fn the_grafana_dashboard_asks_only_for_series_runrate_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/runrate.json")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "the panels an operator looks at first");
    let mut asked = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expression = target["expr"].as_str().expect("a query");
            let words = expression.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            asked.extend(
                words
                    .filter(|word| {
                        ["grpc_server_", "http_request", "runrate_", "process_"]
                            .iter()
                            .any(|prefix| word.starts_with(prefix))
                    })
                    .map(str::to_owned),
            );
        }
    }
    assert!(!asked.is_empty());
    for name in &asked {
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            runrate::telemetry::NAMES.contains(&family)
                || ["process_resident_memory_bytes", "process_open_fds"].contains(&family),
            "the dashboard asks for {name}, which runrate does not export"
        );
    }
    for query in [
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "runrate_outbox_deliveries",
        "runrate_emails_total",
    ] {
        assert!(asked.iter().any(|name| name == query), "{query}");
    }
}

/// What `.dockerignore` lets into the build context: its `!` lines, after a `*`.
fn docker_context_allowlist() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore");
    let text = std::fs::read_to_string(path).expect("read .dockerignore");
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert_eq!(lines.first(), Some(&"*"), "the context is an allowlist");
    lines[1..]
        .iter()
        .map(|line| {
            let entry = line.strip_prefix('!').expect("only `!` lines after `*`");
            entry.trim_end_matches('/').to_owned()
        })
        .collect()
}

#[test]
fn the_build_context_holds_what_the_dockerfile_copies_and_nothing_else() {
    let allowed = docker_context_allowlist();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    let dockerfile = std::fs::read_to_string(path).expect("read the Dockerfile");
    let mut copied = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some(arguments) = line.strip_prefix("COPY ") else {
            continue;
        };
        if arguments.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = arguments.split_whitespace().collect();
        copied.extend(words[..words.len() - 1].iter().map(|w| w.to_string()));
    }
    assert!(!copied.is_empty(), "the Dockerfile copies from the context");
    for source in &copied {
        assert!(
            allowed.contains(source),
            "{source} is copied but not in the context"
        );
    }
    for source in &allowed {
        assert!(
            copied.contains(source),
            "{source} is in the context but never copied"
        );
    }
}

#[test]
fn no_password_is_written_in_the_compose_file_and_the_example_env_names_every_secret() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("read docker-compose.yml");
    // Without POSTGRES_PASSWORD nothing starts: the URL and PostgreSQL both require it.
    let compose = compose_file();
    let error = runrate_environments(&compose, &SECRETS[..1]).unwrap_err();
    assert!(error.starts_with("POSTGRES_PASSWORD: "), "{error}");
    let postgres = &compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"];
    assert!(
        postgres
            .as_str()
            .is_some_and(|value| value.starts_with("${POSTGRES_PASSWORD:?")),
        "PostgreSQL's password comes from the operator: {postgres:?}"
    );
    // Every variable the file requires is in .env.example, with no value filled in.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example"))
        .expect("read .env.example");
    let required: std::collections::BTreeSet<&str> = text
        .match_indices("${")
        .filter_map(|(at, _)| text[at + 2..].split_once(":?").map(|(name, _)| name))
        .filter(|name| name.chars().all(|ch| ch.is_ascii_uppercase() || ch == '_'))
        .collect();
    assert!(required.len() >= 3, "{required:?}");
    for name in required {
        assert!(
            example.lines().any(|line| line == format!("{name}=")),
            ".env.example does not list {name}= (empty)"
        );
    }
}

#[test]
fn the_alert_rules_ask_only_for_series_runrate_exports_and_prometheus_loads_them() {
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert!(
        prometheus.contains("- alerts.yml"),
        "prometheus.yml loads the rules"
    );
    let compose = read("docker-compose.yml");
    assert!(
        compose.contains("./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro"),
        "Compose mounts them beside the configuration"
    );
    let rules = YamlLoader::load_from_str(&read("deploy/prometheus/alerts.yml"))
        .expect("alerts.yml is YAML")
        .pop()
        .expect("one document");
    let mut alerts = Vec::new();
    for group in rules["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            alerts.push(rule["alert"].as_str().expect("an alert name").to_owned());
            let expression = rule["expr"].as_str().expect("an expression");
            for word in expression.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("runrate_") || word.starts_with("grpc_") {
                    let family = word
                        .trim_end_matches("_bucket")
                        .trim_end_matches("_count")
                        .trim_end_matches("_sum");
                    assert!(
                        runrate::telemetry::NAMES.contains(&family),
                        "{}: {word} is not a series runrate exports",
                        alerts.last().expect("this alert")
                    );
                }
            }
            assert!(
                !rule["annotations"]["summary"].is_badvalue(),
                "every alert says what is wrong"
            );
        }
    }
    for wanted in [
        "RunrateDown",
        "RunrateOutboxBacklogGrowing",
        "RunrateDeliveriesFailing",
        "RunrateFanOutStalled",
    ] {
        assert!(alerts.iter().any(|alert| alert == wanted), "{wanted}");
    }
}
