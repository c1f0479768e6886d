//! Compiles the runrate protos with the vendored `protoc`, so that building needs no
//! system package, and writes the descriptor set that server reflection serves.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from here.
    unsafe { env::set_var("PROTOC", protoc) };

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let well_known = protoc_bin_vendored::include_path()?;
    let includes = [PathBuf::from("proto"), well_known];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("runrate_descriptor.bin"))
        .compile_protos(
            &[
                PathBuf::from("proto/runrate/v1/metrics_service.proto"),
                PathBuf::from("proto/runrate/v1/admin_service.proto"),
                PathBuf::from("proto/runrate/v1/newsletter_service.proto"),
            ],
            &includes,
        )?;
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migrations; a new file must rebuild it.
    println!("cargo:rerun-if-changed=src/store/migrations");

    // The PostgreSQL run of the integration suite is built only where a server is named.
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo:rerun-if-env-changed=RUNRATE_TEST_DATABASE_URL");
    if env::var_os("RUNRATE_TEST_DATABASE_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=postgres_tests");
    }
    write_suite_modules(&out_dir)?;
    println!("cargo:rustc-env=RUNRATE_REVISION={}", revision());
    Ok(())
}

/// The commit being built, for `runrate_build_info`: `RUNRATE_REVISION` when set (a
/// container build has no `.git`), else git's short hash, else `unknown`.
fn revision() -> String {
    println!("cargo:rerun-if-env-changed=RUNRATE_REVISION");
    if let Some(revision) = env::var("RUNRATE_REVISION").ok().filter(|r| !r.is_empty()) {
        return revision;
    }
    // Rebuilt when HEAD moves: a checkout changes HEAD, a commit the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(branch) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{branch}");
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|revision| revision.trim().to_owned())
        .filter(|revision| !revision.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// The first line of a module comment that keeps an integration module to one backend's
/// run, followed by the reason.
const ONLY_MARKERS: [(&str, &str); 2] = [
    ("//! SQLite only: ", "suite_modules.rs"),
    ("//! PostgreSQL only: ", "postgres_modules.rs"),
];

/// Declares every module under `tests/api/` for the integration suite's two runs, so that
/// no list is kept by hand: `suite_modules.rs` (SQLite) and `postgres_modules.rs` have
/// all of them but those whose module comment begins with the other backend's
/// [`ONLY_MARKERS`] line. Each also names its modules in `SUITE_MODULES`.
fn write_suite_modules(out_dir: &std::path::Path) -> Result<(), Box<dyn Error>> {
    let suite = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("tests/api");
    println!("cargo:rerun-if-changed={}", suite.display());
    let mut modules = Vec::new();
    // A build without the tests (the container image's) declares none.
    if !suite.is_dir() {
        for (_, run) in ONLY_MARKERS {
            std::fs::write(out_dir.join(run), "")?;
        }
        return Ok(());
    }
    for entry in std::fs::read_dir(&suite)? {
        let path = entry?.path();
        let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
            continue;
        };
        let module = if path.is_dir() {
            path.join("mod.rs")
        } else if path.extension().is_some_and(|ext| ext == "rs") && name != "main" {
            path.clone()
        } else {
            continue;
        };
        if !module.is_file() {
            continue;
        }
        let source = std::fs::read_to_string(&module)?;
        let first_line = source.lines().next().unwrap_or_default();
        let mut only_in = None;
        for (marker, run) in ONLY_MARKERS {
            if let Some(reason) = first_line.strip_prefix(marker) {
                if reason.trim().is_empty() {
                    return Err(format!("{}: `{marker}` needs a reason", module.display()).into());
                }
                only_in = Some(run);
            }
        }
        modules.push((name.to_owned(), module, only_in));
    }
    modules.sort();
    for (_, run) in ONLY_MARKERS {
        let mut code = String::new();
        let mut names = Vec::new();
        for (name, module, only_in) in &modules {
            if only_in.is_some_and(|only| only != run) {
                continue;
            }
            code.push_str(&format!(
                "#[path = {:?}]\nmod {name};\n",
                module.display().to_string()
            ));
            names.push(format!("{name:?}"));
        }
        code.push_str(&format!(
            "/// The modules of this run, as found under `tests/api/` when it was built.\n\
             #[allow(dead_code)]\npub const SUITE_MODULES: &[&str] = &[{}];\n",
            names.join(", ")
        ));
        std::fs::write(out_dir.join(run), code)?;
    }
    Ok(())
}
