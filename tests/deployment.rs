//! The Docker Compose deployment, checked without a Docker engine: every runrate service
//! in `docker-compose.yml` is configured only through variables that are real settings
//! with valid values, and points at the PostgreSQL and Mailpit services of the file.

use std::collections::BTreeMap;

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

/// `${NAME:-default}` as Compose reads it with NAME unset.
fn interpolate(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("a closed ${...}") + start;
        let expression = &rest[start + 2..end];
        let default = expression
            .split_once(":-")
            .map_or("", |(_, default)| default);
        out.push_str(default);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The environment of each service whose name starts with `runrate`, merge keys applied.
fn runrate_environments(compose: &Yaml) -> BTreeMap<String, Vec<(String, String)>> {
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
        let pairs: Vec<(String, String)> = environment
            .as_hash()
            .unwrap_or_else(|| panic!("{name} has an environment mapping"))
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Yaml::String(text) => text.clone(),
                    Yaml::Integer(number) => number.to_string(),
                    other => panic!("{name}: unexpected value {other:?}"),
                };
                (
                    key.as_str().expect("a name").to_owned(),
                    interpolate(&value),
                )
            })
            .collect();
        environments.insert(name.to_owned(), pairs);
    }
    environments
}

#[test]
fn every_runrate_variable_in_the_compose_file_is_a_valid_setting() {
    let compose = compose_file();
    let environments = runrate_environments(&compose);
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
        let empty = std::env::temp_dir().join("runrate-deployment-test-empty.toml");
        std::fs::write(&empty, "").expect("an empty configuration file");
        let settings = Settings::load_from(Some(&empty), environment.clone())
            .unwrap_or_else(|err| panic!("{service}: {err}"));
        assert!(
            settings.database.url.expose().starts_with("postgres://"),
            "{service}"
        );
        assert!(
            settings.database.url.expose().contains("@postgres:5432/"),
            "{service}"
        );
        assert_eq!(settings.mail.transport, MailTransport::Smtp, "{service}");
        assert_eq!(settings.mail.smtp.host, "mailpit", "{service}");
        assert_eq!(settings.mail.smtp.port, 1025, "{service}");
        assert!(
            !settings.admin.token.expose().is_empty(),
            "{service}: a shared admin token"
        );
    }
}

#[test]
fn an_unknown_or_invalid_variable_would_be_caught() {
    let empty = std::env::temp_dir().join("runrate-deployment-test-empty-2.toml");
    std::fs::write(&empty, "").expect("an empty configuration file");
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
    let mailpit_ports = services["mailpit"]["ports"]
        .as_vec()
        .expect("mailpit ports");
    assert!(
        mailpit_ports
            .iter()
            .any(|p| p.as_str() == Some("8025:8025"))
    );
    for replica in ["runrate-a", "runrate-b"] {
        let ports = services[replica]["ports"]
            .as_vec()
            .expect("published ports");
        assert_eq!(ports.len(), 2, "{replica}: gRPC and HTTP");
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
