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

    // The PostgreSQL run of the integration suite is built only where a server is named.
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo:rerun-if-env-changed=RUNRATE_TEST_DATABASE_URL");
    if env::var_os("RUNRATE_TEST_DATABASE_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo:rustc-cfg=postgres_tests");
    }
    Ok(())
}
