//! The suite's roster: every module under `tests/api/` runs on both backends unless the
//! first line of its module comment keeps it to one and says why (`build.rs` reads it).

use std::path::Path;

use crate::support::helpers::Backend;

/// The marker that keeps a module off the other backend's run.
fn marker_of(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "//! SQLite only:",
        Backend::Postgres => "//! PostgreSQL only:",
    }
}

#[test]
fn every_module_runs_on_both_backends_unless_it_says_why_not() {
    let other = match crate::BACKEND {
        Backend::Sqlite => Backend::Postgres,
        Backend::Postgres => Backend::Sqlite,
    };
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut expected = Vec::new();
    for entry in std::fs::read_dir(&suite).expect("list tests/api") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let module = if path.is_dir() {
            path.join("mod.rs")
        } else {
            path.clone()
        };
        if name == "main" || module.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&module).expect("read a module");
        let first_line = source.lines().next().unwrap_or_default();
        for backend in [Backend::Sqlite, Backend::Postgres] {
            if let Some(reason) = first_line.strip_prefix(marker_of(backend)) {
                assert!(
                    reason.trim().len() >= 10,
                    "{}: `{}` must say why",
                    module.display(),
                    marker_of(backend)
                );
            }
        }
        assert!(
            [Backend::Sqlite, Backend::Postgres]
                .iter()
                .any(|backend| first_line.starts_with(marker_of(*backend)))
                || !["sqlite only", "postgresql only", "postgres only"]
                    .iter()
                    .any(|near_miss| first_line.to_lowercase().contains(near_miss)),
            "{}: a module is kept to one backend by a first line `//! SQLite only: <why>` \
             or `//! PostgreSQL only: <why>`, spelled so; this one runs on both",
            module.display()
        );
        if !first_line.starts_with(marker_of(other)) {
            expected.push(name);
        }
    }
    expected.sort();
    let mut built: Vec<String> = crate::SUITE_MODULES
        .iter()
        .map(|name| name.to_string())
        .collect();
    built.sort();
    assert_eq!(
        built, expected,
        "the modules built into this run differ from those under tests/api/"
    );
    assert!(
        expected.len() >= 30,
        "the suite lost its modules: {expected:?}"
    );
}
