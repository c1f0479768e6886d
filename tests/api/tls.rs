//! SQLite only: TLS is the listeners' own, the same whatever the database.
//!
//! TLS on both listeners with certificates made here by openssl: curl reads the JSON API
//! over HTTPS and grpcurl lists the services over gRPC with TLS, both trusting only the
//! test's CA; plain text on a TLS port gets nothing; and a certificate replaced on disk
//! is what the next connection is shown.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::{
    helpers::{ServeProcess, TestDir},
    python::grpcurl,
};

fn openssl(dir: &Path, arguments: &[&str]) {
    let output = Command::new("openssl")
        .args(arguments)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        output.status.success(),
        "openssl {arguments:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, and two certificates it signed for localhost and 127.0.0.1 (`a.pem`, `b.pem`
/// with their keys), in `dir`.
fn make_certificates(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-days",
                "2",
                "-subj",
                "/CN=runrate test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write san.ext");
    for name in ["a", "b"] {
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN=runrate-{name}");
        openssl(
            dir,
            &[
                &["req"][..],
                &ec,
                &["-subj", &subject, "-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                &pem,
            ],
        );
    }
}

/// The subject of the certificate served at `address`.
fn served_subject(address: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address} -servername localhost </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn curl(arguments: &[&str]) -> (bool, String) {
    let output = Command::new("curl")
        .args(arguments)
        .output()
        .expect("run curl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn both_listeners_serve_tls_and_a_renewed_certificate_is_served_next() {
    let dir = TestDir::new().await;
    let certificates: PathBuf = dir.path().join("certificates");
    std::fs::create_dir(&certificates).expect("a directory");
    make_certificates(&certificates);
    let served_certificate = certificates.join("served.pem");
    let served_key = certificates.join("served.key");
    std::fs::copy(certificates.join("a.pem"), &served_certificate).expect("copy");
    std::fs::copy(certificates.join("a.key"), &served_key).expect("copy");

    let mut environment = dir.serve_environment();
    for section in ["GRPC", "HTTP"] {
        environment.push((
            format!("RUNRATE__{section}__TLS_CERTIFICATE"),
            served_certificate.display().to_string(),
        ));
        environment.push((
            format!("RUNRATE__{section}__TLS_KEY"),
            served_key.display().to_string(),
        ));
    }
    let server = ServeProcess::start(dir.path(), environment);
    let http = server
        .http_address
        .expect("the web side's address")
        .to_string();
    let grpc = server.url.trim_start_matches("http://").to_owned();
    let ca = certificates.join("ca.pem").display().to_string();

    let (ok, body) = curl(&[
        "-sS",
        "--cacert",
        &ca,
        &format!("https://{http}/v1/providers/aws"),
    ]);
    assert!(ok && body.contains("\"displayName\":\"AWS\""), "{body}");
    let (plain, _) = curl(&[
        "-sS",
        "--max-time",
        "5",
        &format!("http://{http}/v1/providers/aws"),
    ]);
    assert!(!plain, "plain HTTP on the TLS port got an answer");
    let (untrusted, _) = curl(&["-sS", &format!("https://{http}/v1/providers/aws")]);
    assert!(
        !untrusted,
        "a client that does not trust the test CA got through"
    );

    let grpcurl = tokio::task::spawn_blocking(grpcurl)
        .await
        .expect("find grpcurl");
    let listed = Command::new(&grpcurl)
        .args(["-cacert", &ca, &grpc, "list"])
        .output()
        .expect("run grpcurl");
    let services = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && services.contains("runrate.v1.MetricsService"),
        "{services}{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    assert!(
        served_subject(&http).contains("runrate-a"),
        "{}",
        served_subject(&http)
    );
    // A renewal replaces the files (by rename, as certbot and Kubernetes do): the next
    // connection on either listener is shown the new certificate.
    for (from, to) in [("b.pem", &served_certificate), ("b.key", &served_key)] {
        let staged = certificates.join(format!("{from}.new"));
        std::fs::copy(certificates.join(from), &staged).expect("stage");
        std::fs::rename(&staged, to).expect("replace");
    }
    assert!(
        served_subject(&http).contains("runrate-b"),
        "{}",
        served_subject(&http)
    );
    assert!(
        served_subject(&grpc).contains("runrate-b"),
        "{}",
        served_subject(&grpc)
    );
    let (ok, body) = curl(&[
        "-sS",
        "--cacert",
        &ca,
        &format!("https://{http}/v1/providers/aws"),
    ]);
    assert!(ok && body.contains("AWS"), "{body}");
}
