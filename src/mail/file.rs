//! The default transport: every email becomes an `.eml` file, so the service runs, and
//! can be tried out, with no mail server.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{Mailer, OutgoingEmail, SendError};

pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|err| {
            anyhow::anyhow!("cannot create the mail directory {}: {err}", dir.display())
        })?;
        Ok(FileMailer { dir })
    }
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        let stem: String = email
            .message_id
            .trim_matches(['<', '>'])
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = self.dir.join(format!("{stem}.eml"));
        let partial = self.dir.join(format!(".{stem}.eml.partial"));
        // Written aside and renamed, so a reader never sees half an email.
        let write = async {
            tokio::fs::write(&partial, &email.bytes).await?;
            tokio::fs::rename(&partial, &path).await
        };
        write
            .await
            .map_err(|err| SendError::Transient(format!("cannot write {}: {err}", path.display())))
    }
}
