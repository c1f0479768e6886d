//! Sending email: composing messages from the templates, and the transports that carry
//! them — `.eml` files by default, or SMTP.

mod channel;
mod compose;
mod feedback;
mod file;
mod message_id;
mod pace;
mod smtp;
mod update;

use std::{path::Path, sync::Arc};

use async_trait::async_trait;

use crate::settings::{MailSettings, MailTransport};

pub use channel::EmailChannel;
pub use compose::{EmailComposer, UpdateEmail};
pub use feedback::{
    FeedbackDesk, FeedbackError, FeedbackKind, FeedbackOutcome, MAX_FEEDBACK_BYTES, read_feedback,
};
pub use file::FileMailer;
pub use message_id::MessageIds;
pub use pace::SendPace;
pub use smtp::SmtpMailer;

/// A message ready to go: its envelope and its RFC 5322 bytes.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub envelope: lettre::address::Envelope,
    pub message_id: String,
    pub bytes: Vec<u8>,
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A 4xx reply, a timeout, a dropped connection: try again later.
    #[error("{0}")]
    Transient(String),
    /// The server asks the sender as a whole to slow down (421, 454, a refused
    /// connection): not this recipient's fault, and a reason to send less for a while.
    #[error("{0}")]
    Throttled(String),
    /// The server refused the recipient or the message for good (5xx).
    #[error("{0}")]
    Rejected(String),
    /// The server refused us, not the recipient (5xx to MAIL FROM): the address is fine.
    #[error("{0}")]
    SenderRefused(String),
}

#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError>;
}

/// The transport the settings choose.
pub fn build_mailer(settings: &MailSettings, data_dir: &Path) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match settings.transport {
        MailTransport::File => Arc::new(FileMailer::new(data_dir.join("mail"))?),
        MailTransport::Smtp => Arc::new(SmtpMailer::new(&settings.smtp, &settings.from)?),
    })
}
