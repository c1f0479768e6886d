//! Sending email: composing messages from the templates, and the transports that carry
//! them — `.eml` files by default, or SMTP.

mod channel;
mod compose;
mod feedback;
mod file;
mod message_id;
mod pace;
mod smtp;

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

    /// A batch of emails sent one after another. With `lookahead`, a transport may
    /// hold an email back until the next one is handed over or the batch is finished,
    /// to send the two together; by default each goes out when handed over.
    fn batch(&self, lookahead: bool) -> Box<dyn MailBatch + '_> {
        let _ = lookahead;
        Box::new(OneByOne(self))
    }
}

/// What became of an email handed to a [`MailBatch`], under the key it was handed over
/// with; the email comes back, to be tried again if need be.
pub struct Outcome {
    pub key: usize,
    pub email: OutgoingEmail,
    pub result: Result<(), SendError>,
}

/// Emails handed over one at a time, whose outcomes may come later than the hand-over.
#[async_trait]
pub trait MailBatch: Send {
    /// Hands over the next email; returns the outcomes known now, of this email or of
    /// one handed over before it.
    async fn send(&mut self, key: usize, email: OutgoingEmail) -> Vec<Outcome>;

    /// Sends what was held back; returns the outcomes not returned yet.
    async fn finish(&mut self) -> Vec<Outcome>;
}

/// Each email sent when handed over.
struct OneByOne<'a, M: ?Sized>(&'a M);

#[async_trait]
impl<M: Mailer + ?Sized> MailBatch for OneByOne<'_, M> {
    async fn send(&mut self, key: usize, email: OutgoingEmail) -> Vec<Outcome> {
        let result = self.0.send(&email).await;
        vec![Outcome { key, email, result }]
    }

    async fn finish(&mut self) -> Vec<Outcome> {
        Vec::new()
    }
}

/// The transport the settings choose.
pub fn build_mailer(settings: &MailSettings, data_dir: &Path) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match settings.transport {
        MailTransport::File => Arc::new(FileMailer::new(data_dir.join("mail"))?),
        MailTransport::Smtp => Arc::new(SmtpMailer::new(&settings.smtp, &settings.from)?),
    })
}
