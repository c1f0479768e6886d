//! SQLite only: the documents are the same whatever the backend, and the tour runs the
//! default server, which is SQLite.
//!
//! The README and `docs/` kept true: the README stays a front page, every link resolves
//! inside the repository, the configuration page lists every setting with its real
//! default, every command shown parses as the real CLI or names a real gRPC method with a
//! valid request, and the README's tour and the loading examples run as written against
//! `runrate serve`. And the source tree stays one a newcomer can read: each file says
//! first what it holds, and holds one thing.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use clap::Parser;
use prost_reflect::{DescriptorPool, DynamicMessage};
use runrate::settings::Settings;

use crate::support::{
    helpers::{ServeProcess, TestDir},
    http_client,
    python::grpcurl,
};

/// The longest the README may grow: a front page, with the reference in `docs/`.
const README_MAX_LINES: usize = 250;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/, with their text.
fn documents() -> Vec<(PathBuf, String)> {
    let mut paths = vec![repository().join("README.md")];
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repository().join("docs"))
        .expect("list docs/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read a document");
            (path, text)
        })
        .collect()
}

fn name(path: &Path) -> String {
    path.strip_prefix(repository())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The fenced code blocks of `text` in `language`, each as its lines.
fn code_blocks<'a>(text: &'a str, language: &str) -> Vec<Vec<&'a str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.trim() == language => current = Some(Vec::new()),
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// One command of a console block and the output shown under it.
struct Session {
    command: String,
    output: Vec<String>,
}

fn sessions(block: &[&str]) -> Vec<Session> {
    let mut sessions: Vec<Session> = Vec::new();
    for line in block {
        if let Some(command) = line.strip_prefix("$ ") {
            sessions.push(Session {
                command: command.to_owned(),
                output: Vec::new(),
            });
        } else if let Some(session) = sessions.last_mut() {
            // A continued command line, or output.
            if session.command.ends_with('\\') && session.output.is_empty() {
                session.command.pop();
                session.command.push_str(line.trim_start());
            } else {
                session.output.push((*line).to_owned());
            }
        }
    }
    sessions
}

/// Every command the documents show: console lines after `$ `, and sh blocks.
fn commands() -> Vec<(String, String)> {
    let mut commands = Vec::new();
    for (path, text) in documents() {
        for block in code_blocks(&text, "console") {
            for session in sessions(&block) {
                commands.push((name(&path), session.command));
            }
        }
        for block in code_blocks(&text, "sh") {
            for line in block {
                let line = line.split(" #").next().unwrap_or_default().trim();
                if !line.is_empty() && !line.starts_with('#') {
                    commands.push((name(&path), line.to_owned()));
                }
            }
        }
    }
    commands
}

/// A command line split into words as a shell would, for the quoting the documents use.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for ch in command.chars() {
        match (quote, ch) {
            (Some(open), ch) if ch == open => quote = None,
            (Some(_), ch) => word.get_or_insert_default().push(ch),
            (None, '\'' | '"') => {
                quote = Some(ch);
                word.get_or_insert_default();
            }
            (None, ch) if ch.is_whitespace() => words.extend(word.take()),
            (None, ch) => word.get_or_insert_default().push(ch),
        }
    }
    words.extend(word);
    words
}

/// The arguments after the program, when `command` runs runrate (leading variable
/// assignments skipped), up to the first pipe.
fn runrate_arguments(command: &str) -> Option<Vec<String>> {
    let command = command.split(" | ").next().unwrap_or_default();
    let words: Vec<String> = words(command)
        .into_iter()
        .skip_while(|word| word.contains('=') && !word.starts_with('-'))
        .collect();
    match words.first().map(String::as_str) {
        Some("runrate") => Some(words[1..].to_vec()),
        Some("cargo")
            if words.get(1..4) == Some(&["run".into(), "--release".into(), "--".into()]) =>
        {
            Some(words[4..].to_vec())
        }
        _ => None,
    }
}

#[test]
fn the_readme_is_a_front_page_that_links_every_topic() {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; reference material belongs in docs/"
    );
    for (path, _) in documents().iter().skip(1) {
        let link = name(path);
        assert!(
            readme.contains(&format!("]({link})")),
            "README.md does not link {link}"
        );
    }
    assert!(
        readme.contains("```sh\ncargo run --release -- serve\n```")
            && readme.contains("```sh\ncargo test\n```"),
        "the README's two commands are gone"
    );
}

#[test]
fn every_link_resolves_inside_the_repository_and_nothing_outside_it_is_cited() {
    let root = repository().canonicalize().expect("the repository");
    for (path, text) in documents() {
        // This project's neighbours on a developer's machine are not the reader's.
        for outside in ["../shared", "/work/", "/root/"] {
            assert!(
                !text.contains(outside),
                "{} cites a path outside the repository: {outside}",
                name(&path)
            );
        }
        for (_, target) in text.match_indices("](").map(|(at, _)| {
            let rest = &text[at + 2..];
            (at, &rest[..rest.find(')').unwrap_or(rest.len())])
        }) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let linked = if file.is_empty() {
                path.clone()
            } else {
                path.parent().expect("a directory").join(file)
            };
            let resolved = linked
                .canonicalize()
                .unwrap_or_else(|_| panic!("{}: the link {target} leads nowhere", name(&path)));
            assert!(
                resolved.starts_with(&root),
                "{}: the link {target} leaves the repository",
                name(&path)
            );
            if !anchor.is_empty() {
                let page = std::fs::read_to_string(&resolved).expect("read a linked page");
                let anchors: Vec<String> = page
                    .lines()
                    .filter_map(|line| line.strip_prefix('#'))
                    .map(|heading| heading_anchor(heading.trim_start_matches('#')))
                    .collect();
                assert!(
                    anchors.iter().any(|known| known == anchor),
                    "{}: the link {target} names no heading of {file} ({anchors:?})",
                    name(&path)
                );
            }
        }
    }
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.
fn heading_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|ch| ch.is_alphanumeric() || *ch == ' ' || *ch == '-' || *ch == '_')
        .map(|ch| if ch == ' ' { '-' } else { ch })
        .collect()
}

#[test]
fn the_configuration_page_lists_every_setting_with_its_default_and_variable() {
    let page = std::fs::read_to_string(repository().join("docs/configuration.md"))
        .expect("docs/configuration.md");
    let defaults = toml::Value::try_from(Settings::default()).expect("the defaults as TOML");
    let mut expected = BTreeMap::new();
    flatten("", &defaults, &mut expected);

    let mut section = String::new();
    let mut documented = BTreeMap::new();
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading
                .trim_matches(|ch| ch == '`' || ch == '[' || ch == ']')
                .replace("Top level", "");
            continue;
        }
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|cell| cell.trim_matches(|ch| ch == '|' || ch == ' '))
            .collect();
        let [key, default, variable, what] = cells[..] else {
            continue;
        };
        if !key.starts_with('`') {
            continue;
        }
        let key = key.trim_matches('`');
        let full_key = if section.is_empty() {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        let default: toml::Table =
            toml::from_str(&format!("value = {}", default.trim_matches('`')))
                .unwrap_or_else(|err| panic!("{full_key}: the default is not a TOML value: {err}"));
        assert_eq!(
            variable.trim_matches('`'),
            format!("RUNRATE__{}", full_key.replace('.', "__").to_uppercase()),
            "{full_key}: the environment variable"
        );
        assert!(!what.trim().is_empty(), "{full_key}: say what it sets");
        documented.insert(full_key, default["value"].clone());
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "docs/configuration.md and the settings name different keys"
    );
    for (key, value) in &expected {
        assert_eq!(
            as_duration(&documented[key]),
            as_duration(value),
            "docs/configuration.md: the default of {key}"
        );
    }

    // The example file at the top of the page is a configuration runrate accepts.
    let dir = tempfile::tempdir().expect("a directory");
    let file = dir.path().join("runrate.toml");
    for block in code_blocks(&page, "toml") {
        std::fs::write(&file, block.join("\n")).expect("write the example");
        Settings::load_from(Some(&file), Vec::new()).expect("the page's example loads");
    }
}

/// A duration written either way (`24h`, `1day`) as the time it is; any other value as
/// it is.
fn as_duration(value: &toml::Value) -> Result<Duration, toml::Value> {
    value
        .as_str()
        .and_then(|text| humantime::parse_duration(text).ok())
        .ok_or_else(|| value.clone())
}

fn flatten(prefix: &str, value: &toml::Value, keys: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(table) => {
            for (key, value) in table {
                let key = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&key, value, keys);
            }
        }
        value => {
            keys.insert(prefix.to_owned(), value.clone());
        }
    }
}

#[test]
fn every_command_shown_is_one_the_cli_or_the_server_takes() {
    let pool = DescriptorPool::decode(runrate::grpc::pb::FILE_DESCRIPTOR_SET).expect("the protos");
    let mut runrate_commands = 0;
    let mut grpc_calls = 0;
    for (document, command) in commands() {
        if let Some(arguments) = runrate_arguments(&command) {
            runrate_commands += 1;
            let argv = std::iter::once("runrate".to_owned()).chain(arguments);
            if let Err(err) = runrate::cli::Cli::try_parse_from(argv) {
                panic!("{document}: `{command}` is not a runrate command:\n{err}");
            }
        }
        let words = words(command.split(" | ").next().unwrap_or_default());
        if words.first().map(String::as_str) != Some("grpcurl")
            || words.last().map(String::as_str) == Some("list")
        {
            continue;
        }
        grpc_calls += 1;
        let method = words.last().expect("a method");
        let (service, method_name) = method.split_once('/').expect("Service/Method");
        if service.starts_with("grpc.") {
            continue;
        }
        let service = pool
            .get_service_by_name(service)
            .unwrap_or_else(|| panic!("{document}: `{command}` names no service of runrate's"));
        let method = service
            .methods()
            .find(|candidate| candidate.name() == method_name)
            .unwrap_or_else(|| {
                panic!(
                    "{document}: `{command}` names no method of {}",
                    service.name()
                )
            });
        if let Some(at) = words.iter().position(|word| word == "-d") {
            let mut json = serde_json::Deserializer::from_str(&words[at + 1]);
            DynamicMessage::deserialize(method.input(), &mut json).unwrap_or_else(|err| {
                panic!(
                    "{document}: `{command}` sends no valid {}: {err}",
                    method.input().name()
                )
            });
        }
    }
    assert!(
        runrate_commands >= 10 && grpc_calls >= 4,
        "the documents lost their examples"
    );
}

/// The longest a source file may grow before it holds more than one thing.
const SOURCE_MAX_LINES: usize = 700;

#[test]
fn every_source_file_says_first_what_it_holds_and_holds_one_thing() {
    let mut pending = vec![repository().join("src")];
    let mut files = 0;
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("list a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|ext| ext != "rs") {
                continue;
            }
            files += 1;
            let source = std::fs::read_to_string(&path).expect("read a source file");
            assert!(
                source.starts_with("//!"),
                "{} does not begin with a `//!` comment saying what it holds",
                name(&path)
            );
            let lines = source.lines().count();
            assert!(
                lines <= SOURCE_MAX_LINES,
                "{} has {lines} lines: split what it holds",
                name(&path)
            );
        }
    }
    assert!(files > 50, "found only {files} source files");
}

/// The documents whose console sessions run as written, each in a fresh directory beside
/// a new `runrate serve`, one command after the other: the README's tour, and loading
/// files. The others show what depends on more than a fresh server (another server's
/// state, a stream that does not end, a secret made at random), and are checked by
/// `every_command_shown_is_one_the_cli_or_the_server_takes`.
const RUNNABLE: [&str; 2] = ["README.md", "docs/figures-file.md"];

/// Each runnable document's console sessions run against `runrate serve`: every
/// command's output must be what the document shows (`…` stands for any text within a
/// line, and on a line of its own for any lines).
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_tour_and_the_loading_examples_run_as_written() {
    for document in RUNNABLE {
        let text = std::fs::read_to_string(repository().join(document)).expect("a document");
        let ran = run_console_sessions(document, &text).await;
        assert!(ran >= 5, "{document} lost its commands ({ran} ran)");
    }
}

/// Runs every console session of `text` in order beside a new server; how many ran.
async fn run_console_sessions(document: &str, text: &str) -> usize {
    let dir = TestDir::new().await;
    let work = dir.path();
    std::os::unix::fs::symlink(repository().join("tests"), work.join("tests"))
        .expect("link tests/");
    let server = ServeProcess::start(work, dir.serve_environment());
    let http = server.http_address.expect("the web side's address");
    let grpc = server.url.trim_start_matches("http://").to_owned();

    // `runrate` and `grpcurl` on the PATH, as the reader has them.
    let bin = work.join("bin");
    std::fs::create_dir(&bin).expect("make bin/");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_runrate"), bin.join("runrate"))
        .expect("link runrate");
    let grpcurl = tokio::task::spawn_blocking(grpcurl)
        .await
        .expect("find grpcurl");
    std::os::unix::fs::symlink(grpcurl, bin.join("grpcurl")).expect("link grpcurl");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    for block in code_blocks(text, "console") {
        for session in sessions(&block) {
            let command = session
                .command
                .replace("cargo run --release --", "runrate")
                .replace("localhost:50051", &grpc)
                .replace("127.0.0.1:8080", &http.to_string());
            let mut shown: Vec<&str> = session.output.iter().map(String::as_str).collect();
            while shown.last().is_some_and(|line| line.is_empty()) {
                shown.pop();
            }
            // What the outbox has sent is read until it has sent it, for a while.
            let patience = if command.starts_with("runrate deliveries") {
                30
            } else {
                0
            };
            let started = Instant::now();
            loop {
                let output = Command::new("bash")
                    .args(["-c", &command])
                    .current_dir(work)
                    .env("PATH", &path)
                    .env("RUNRATE_SERVER", &server.url)
                    .output()
                    .expect("run a command of the tour");
                let printed = String::from_utf8_lossy(&output.stdout).to_string()
                    + &String::from_utf8_lossy(&output.stderr);
                let lines: Vec<&str> = printed.lines().collect();
                if matches(&shown, &lines) {
                    break;
                }
                if started.elapsed() >= Duration::from_secs(patience) {
                    panic!(
                        "{document}: `{}` printed\n{printed}\ninstead of\n{}\n(server log:\n{})",
                        session.command,
                        shown.join("\n"),
                        server.output()
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ran += 1;
        }
    }
    ran
}

/// Every page the documents link on the web side, and every GET they show, is there.
#[tokio::test]
async fn every_page_the_documents_send_a_reader_to_is_there() {
    let dir = TestDir::new().await;
    let server = ServeProcess::start(dir.path(), dir.serve_environment());
    let http = server.http_address.expect("the web side's address");
    for (document, text) in documents() {
        let commands = text.lines().filter(|line| {
            line.contains("curl") && !line.contains(" -X ") && !line.contains(" -d")
        });
        let links = text
            .split('<')
            .skip(1)
            .filter_map(|rest| rest.split_once('>'))
            .map(|(link, _)| link);
        for target in commands.chain(links) {
            let Some((_, rest)) = target.split_once("http://127.0.0.1:8080") else {
                continue;
            };
            let path: String = rest
                .chars()
                .take_while(|ch| !ch.is_whitespace() && !"`'\")".contains(*ch))
                .collect();
            if path.contains(":watch") {
                continue; // a stream that does not end; `watch_over_http` covers it
            }
            let response = http_client::request(http, "GET", &path, None).await;
            assert_eq!(
                response.status,
                200,
                "{}: GET {path} answers {}",
                name(&document),
                response.status
            );
        }
    }
}

/// Whether `actual` is what `shown` shows, `…` standing for any text within a line and,
/// alone on its line, for any number of lines.
fn matches(shown: &[&str], actual: &[&str]) -> bool {
    match shown.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "…" => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((line, actual_rest)) => line_matches(first, line) && matches(rest, actual_rest),
            None => false,
        },
    }
}

fn line_matches(shown: &str, actual: &str) -> bool {
    let mut parts = shown.split('…');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = actual.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    for (index, part) in parts.iter().enumerate() {
        if index + 1 == parts.len() {
            return rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.is_empty()
}
