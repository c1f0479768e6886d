//! TLS on runrate's own listeners, with rustls: a certificate chain and key from PEM
//! files, read again whenever either file changes on disk (a renewal by certbot or a
//! Kubernetes secret update), so that the next connection gets the new certificate while
//! the open ones go on undisturbed. A file that cannot be read at start stops start-up;
//! one that goes bad later is logged, and the last good certificate stays in use.

use std::{
    fs::Metadata,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use anyhow::Context;
use tokio_rustls::rustls::{
    self, ServerConfig,
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// What identifies one version of a file on disk, without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FileVersion {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileVersion {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata: Metadata = std::fs::metadata(path)?;
        Ok(FileVersion {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: std::os::unix::fs::MetadataExt::ino(&metadata),
        })
    }
}

/// The certificate a listener serves, reloaded when its files change.
#[derive(Debug)]
pub struct ReloadingCertificate {
    certificate_file: PathBuf,
    key_file: PathBuf,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    versions: (FileVersion, FileVersion),
}

impl ReloadingCertificate {
    /// Reads the chain and key now; an error names the file and what is wrong.
    pub fn load(certificate_file: &Path, key_file: &Path) -> anyhow::Result<Self> {
        let loaded = read(certificate_file, key_file)?;
        Ok(ReloadingCertificate {
            certificate_file: certificate_file.to_owned(),
            key_file: key_file.to_owned(),
            current: Mutex::new(loaded),
        })
    }

    /// The certificate to present, read again first if either file changed.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let versions = (
            FileVersion::of(&self.certificate_file),
            FileVersion::of(&self.key_file),
        );
        if let (Ok(certificate), Ok(key)) = versions
            && (certificate, key) != current.versions
        {
            match read(&self.certificate_file, &self.key_file) {
                Ok(loaded) => {
                    tracing::info!(certificate = %self.certificate_file.display(), "serving a renewed TLS certificate");
                    *current = loaded;
                }
                // Half-written by a renewal, say: keep the last good one, and look again
                // at the next connection.
                Err(err) => {
                    tracing::warn!(error = %format!("{err:#}"), "cannot read the renewed TLS certificate; serving the previous one")
                }
            }
        }
        current.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read(certificate_file: &Path, key_file: &Path) -> anyhow::Result<Loaded> {
    let versions = (
        FileVersion::of(certificate_file)
            .with_context(|| format!("cannot read {}", certificate_file.display()))?,
        FileVersion::of(key_file).with_context(|| format!("cannot read {}", key_file.display()))?,
    );
    let chain = CertificateDer::pem_file_iter(certificate_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|err| {
            anyhow::anyhow!(
                "{} holds no PEM certificate chain: {err}",
                certificate_file.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", certificate_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|err| anyhow::anyhow!("{} holds no PEM private key: {err}", key_file.display()))?;
    let signing =
        any_supported_type(&key).map_err(|err| anyhow::anyhow!("{}: {err}", key_file.display()))?;
    let key = CertifiedKey::new(chain, signing);
    key.keys_match().map_err(|err| {
        anyhow::anyhow!(
            "{} is not the key of {}: {err}",
            key_file.display(),
            certificate_file.display()
        )
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        versions,
    })
}

/// TLS for a listener whose certificate and key files are set (`None` where the
/// certificate is not), offering `protocols` by ALPN.
pub fn acceptor(
    certificate_file: &Path,
    key_file: &Path,
    protocols: &[&[u8]],
) -> anyhow::Result<Option<tokio_rustls::TlsAcceptor>> {
    if certificate_file.as_os_str().is_empty() {
        return Ok(None);
    }
    let certificate = Arc::new(ReloadingCertificate::load(certificate_file, key_file)?);
    Ok(Some(server_config(certificate, protocols)?.into()))
}

/// A server configuration presenting `certificate`, offering `protocols` by ALPN.
fn server_config(
    certificate: Arc<ReloadingCertificate>,
    protocols: &[&[u8]],
) -> anyhow::Result<Arc<ServerConfig>> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("cannot set up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(certificate);
    config.alpn_protocols = protocols.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}
