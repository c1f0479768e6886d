//! The admin bearer token: configured, or generated on first start and kept in the data
//! directory where only the owner can read it. Presented tokens are compared by digest
//! in constant time, so neither content nor length leaks through timing.

use std::{
    fs,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The token file's name inside the data directory.
pub const TOKEN_FILE_NAME: &str = "admin-token";

/// A fresh secret of 256 random bits, URL-safe.
pub fn generate_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| anyhow::anyhow!("no randomness available: {err}"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    pub fn new(secret: &str) -> Self {
        AdminToken {
            digest: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    /// The configured token, or the one in `<data_dir>/admin-token`, created on first use.
    pub fn resolve(configured: &str, data_dir: &Path) -> anyhow::Result<Self> {
        if !configured.is_empty() {
            return Ok(AdminToken::new(configured));
        }
        let path = token_file(data_dir);
        match fs::read_to_string(&path) {
            Ok(secret) if !secret.trim().is_empty() => Ok(AdminToken::new(secret.trim())),
            Ok(_) => anyhow::bail!("the admin token file {} is empty", path.display()),
            Err(err) if err.kind() == ErrorKind::NotFound => {
                let secret = generate_secret()?;
                write_owner_only(&path, &secret)?;
                tracing::info!(file = %path.display(), "generated the admin token");
                Ok(AdminToken::new(&secret))
            }
            Err(err) => {
                Err(err).with_context(|| format!("cannot read the admin token {}", path.display()))
            }
        }
    }

    /// The token an `authorization` header value presents (`Bearer <token>`), whichever
    /// protocol it came over; `None` when it presents none.
    pub fn presented(header: Option<&str>) -> Option<&str> {
        header?.strip_prefix("Bearer ").map(str::trim)
    }

    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}

pub fn token_file(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE_NAME)
}

fn write_owner_only(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create the admin token file {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_the_same_token_back() {
        let dir = tempfile::tempdir().unwrap();
        AdminToken::resolve("", dir.path()).unwrap();
        let secret = fs::read_to_string(token_file(dir.path())).unwrap();
        assert!(secret.len() >= 43, "256 bits in base64");
        let again = AdminToken::resolve("", dir.path()).unwrap();
        assert!(again.matches(&secret));
        assert!(!again.matches("something else"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(token_file(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_configured_token_wins_and_writes_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = AdminToken::resolve("configured-token-123", dir.path()).unwrap();
        assert!(token.matches("configured-token-123"));
        assert!(!token_file(dir.path()).exists());
    }
}
