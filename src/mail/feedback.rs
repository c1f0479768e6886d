//! Mail that comes back after sending: delivery status notifications (RFC 3464) and
//! abuse reports (ARF, RFC 5965). Each is read for what it says (a permanent failure, a
//! temporary one, a complaint) and for the Message-ID of the email it answers, which
//! names the delivery; then the delivery is marked failed and its address suppressed:
//! bounced for a permanent failure, complained for an abuse report. A temporary failure
//! changes nothing. mail-parser reads the MIME structure; the report fields themselves
//! are header-like lines no MIME parser reads, so they are read here.

use std::{sync::Arc, time::SystemTime};

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::MessageIds;
use crate::{
    domain::{Named, subscribers::SubscriberState},
    store::{Store, StoreError},
    telemetry,
};

/// Largest report accepted: reports quote the original message, which runrate keeps
/// well under this.
pub const MAX_FEEDBACK_BYTES: usize = 1024 * 1024;

/// What a report says about the email it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedbackKind {
    /// A permanent failure (`Action: failed`, status 5.x.x), with its status.
    Bounce(String),
    /// A temporary one (`delayed`, or status 4.x.x): the email may still arrive.
    SoftBounce(String),
    /// An abuse report, with its feedback type.
    Complaint(String),
    /// Delivered, relayed or expanded: good news, nothing to do.
    NotAFailure(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFeedback {
    pub kind: FeedbackKind,
    /// The Message-ID of the email the report answers, as the report quotes it.
    pub original_message_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("the message is larger than {MAX_FEEDBACK_BYTES} bytes")]
    TooLarge,
    #[error("not an email message")]
    NotAMessage,
    #[error(
        "not a delivery status notification or an abuse report (expected multipart/report with report-type delivery-status or feedback-report, found {0})"
    )]
    NotAReport(String),
    #[error("the report has no {0} part")]
    MissingPart(&'static str),
    #[error("the report quotes no Message-ID of the email it answers")]
    NoMessageId,
    #[error("the Message-ID {0} is not one runrate wrote")]
    NotOurs(String),
    #[error("delivery {0} is not known here")]
    UnknownDelivery(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads a report: what it says and which email it answers.
pub fn read_feedback(raw: &[u8]) -> Result<MailFeedback, FeedbackError> {
    if raw.len() > MAX_FEEDBACK_BYTES {
        return Err(FeedbackError::TooLarge);
    }
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| !message.headers().is_empty())
        .ok_or(FeedbackError::NotAMessage)?;
    let content_type = message.root_part().content_type();
    let report_type = content_type
        .filter(|ct| {
            ct.ctype().eq_ignore_ascii_case("multipart")
                && ct
                    .subtype()
                    .is_some_and(|s| s.eq_ignore_ascii_case("report"))
        })
        .and_then(|ct| ct.attribute("report-type"))
        .map(str::to_ascii_lowercase);
    let kind = match report_type.as_deref() {
        Some("delivery-status") => {
            let fields = part_text(&message, &["delivery-status", "global-delivery-status"])
                .ok_or(FeedbackError::MissingPart("message/delivery-status"))?;
            delivery_status(&fields)
        }
        Some("feedback-report") => {
            let fields = part_text(&message, &["feedback-report"])
                .ok_or(FeedbackError::MissingPart("message/feedback-report"))?;
            let feedback_type = field_groups(&fields)
                .first()
                .and_then(|group| field(group, "feedback-type"))
                .unwrap_or("abuse")
                .to_ascii_lowercase();
            if feedback_type == "not-spam" {
                FeedbackKind::NotAFailure(feedback_type)
            } else {
                FeedbackKind::Complaint(feedback_type)
            }
        }
        _ => {
            let found = content_type.map_or_else(
                || "no content type".to_owned(),
                |ct| {
                    let mut found = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
                    if let Some(report) = ct.attribute("report-type") {
                        found.push_str(&format!(" with report-type {report}"));
                    }
                    found
                },
            );
            return Err(FeedbackError::NotAReport(found));
        }
    };
    Ok(MailFeedback {
        kind,
        original_message_id: original_message_id(&message),
    })
}

/// The text of the first `message/<subtype>` part, for one of `subtypes`.
fn part_text(message: &Message<'_>, subtypes: &[&str]) -> Option<String> {
    message.parts.iter().find_map(|part| {
        let ct = part.content_type()?;
        let wanted = ct.ctype().eq_ignore_ascii_case("message")
            && ct
                .subtype()
                .is_some_and(|s| subtypes.iter().any(|wanted| s.eq_ignore_ascii_case(wanted)));
        wanted.then(|| String::from_utf8_lossy(part.contents()).into_owned())
    })
}

/// The Message-ID of the quoted original: a `message/rfc822` part, or the headers alone
/// (`text/rfc822-headers`).
fn original_message_id(message: &Message<'_>) -> Option<String> {
    message.parts.iter().find_map(|part| {
        if let PartType::Message(original) = &part.body {
            return original.message_id().map(|id| format!("<{id}>"));
        }
        let ct = part.content_type()?;
        if !ct
            .subtype()
            .is_some_and(|s| s.eq_ignore_ascii_case("rfc822-headers"))
        {
            return None;
        }
        let headers = String::from_utf8_lossy(part.contents()).into_owned();
        let unfolded = headers
            .replace("\r\n", "\n")
            .replace("\n ", " ")
            .replace("\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("message-id")
                .then(|| value.trim().to_owned())
        })
    })
}

/// The verdict of a delivery-status part: its recipients' worst news.
fn delivery_status(fields: &str) -> FeedbackKind {
    let groups = field_groups(fields);
    let recipients = groups.iter().skip(1);
    let mut verdict = None;
    for group in recipients {
        let action = field(group, "action").unwrap_or("").to_ascii_lowercase();
        let status = field(group, "status").unwrap_or("").to_owned();
        let kind = match action.as_str() {
            "failed" if status.starts_with('5') => FeedbackKind::Bounce(status),
            "failed" | "delayed" => FeedbackKind::SoftBounce(status),
            _ => FeedbackKind::NotAFailure(action),
        };
        verdict = Some(match (verdict, kind) {
            (Some(FeedbackKind::Bounce(status)), _) | (_, FeedbackKind::Bounce(status)) => {
                FeedbackKind::Bounce(status)
            }
            (Some(FeedbackKind::SoftBounce(status)), _) | (_, FeedbackKind::SoftBounce(status)) => {
                FeedbackKind::SoftBounce(status)
            }
            (_, other) => other,
        });
    }
    verdict.unwrap_or_else(|| FeedbackKind::NotAFailure("no recipient fields".to_owned()))
}

/// Header-like fields in groups separated by blank lines, continuation lines unfolded.
fn field_groups(text: &str) -> Vec<Vec<(String, String)>> {
    let mut groups = Vec::new();
    let mut group: Vec<(String, String)> = Vec::new();
    for line in text.replace("\r\n", "\n").lines() {
        if line.trim().is_empty() {
            if !group.is_empty() {
                groups.push(std::mem::take(&mut group));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = group.last_mut() {
                value.push(' ');
                value.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            group.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    if !group.is_empty() {
        groups.push(group);
    }
    groups
}

fn field<'a>(group: &'a [(String, String)], name: &str) -> Option<&'a str> {
    group
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// What taking a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackOutcome {
    pub kind: FeedbackKind,
    pub delivery: i64,
    pub address: String,
    /// The subscriber's state now, when the report changed it.
    pub suppressed_as: Option<SubscriberState>,
}

/// Takes reports in: reads each, finds its delivery, and records what it says.
pub struct FeedbackDesk {
    store: Arc<Store>,
    message_ids: MessageIds,
}

impl FeedbackDesk {
    pub fn new(store: Arc<Store>, message_ids: MessageIds) -> Self {
        FeedbackDesk { store, message_ids }
    }

    pub async fn take(&self, raw: &[u8]) -> Result<FeedbackOutcome, FeedbackError> {
        let feedback = read_feedback(raw)?;
        let message_id = feedback
            .original_message_id
            .ok_or(FeedbackError::NoMessageId)?;
        let delivery = self
            .message_ids
            .delivery_of(&message_id)
            .ok_or_else(|| FeedbackError::NotOurs(message_id.clone()))?;
        let now = SystemTime::now();
        let mut tx = self.store.begin().await?;
        let (subscriber_id, address) = tx
            .delivery_recipient(delivery)
            .await?
            .ok_or(FeedbackError::UnknownDelivery(delivery))?;
        let (reason, suppress) = match &feedback.kind {
            FeedbackKind::Bounce(status) => (format!("bounced later: {status}"), true),
            FeedbackKind::Complaint(kind) => (format!("complaint: {kind}"), true),
            FeedbackKind::SoftBounce(_) | FeedbackKind::NotAFailure(_) => (String::new(), false),
        };
        let mut suppressed_as = None;
        if suppress {
            tx.fail_delivery(delivery, &reason).await?;
            if let Some(state) = tx.subscriber_state(subscriber_id).await? {
                let next = match feedback.kind {
                    FeedbackKind::Complaint(_) => state.on_complaint(),
                    _ => state.on_bounce(),
                };
                tx.move_subscriber(subscriber_id, next, now).await?;
                suppressed_as = Some(next);
            }
        }
        tx.commit().await?;
        if let Some(state) = suppressed_as {
            metrics::counter!(telemetry::SUPPRESSIONS, "reason" => state.as_str()).increment(1);
        }
        tracing::info!(
            delivery,
            subscriber = subscriber_id,
            kind = ?feedback.kind,
            suppressed = ?suppressed_as,
            "mail feedback taken"
        );
        Ok(FeedbackOutcome {
            kind: feedback.kind,
            delivery,
            address,
            suppressed_as,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_recipient_status_decides() {
        let fields = "Reporting-MTA: dns; mx.example.net\n\nFinal-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.4.1\n\nFinal-Recipient: rfc822; b@example.com\nAction: failed\nStatus: 5.1.1\n";
        assert_eq!(
            delivery_status(fields),
            FeedbackKind::Bounce("5.1.1".into())
        );
        let soft = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 4.2.2\n";
        assert_eq!(
            delivery_status(soft),
            FeedbackKind::SoftBounce("4.2.2".into())
        );
        let good = "Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@example.com\nAction: delivered\nStatus: 2.0.0\n";
        assert_eq!(
            delivery_status(good),
            FeedbackKind::NotAFailure("delivered".into())
        );
    }

    #[test]
    fn plain_mail_is_refused_with_what_it_is() {
        let plain = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nContent-Type: text/plain\r\n\r\nhello\r\n";
        assert!(
            matches!(read_feedback(plain), Err(FeedbackError::NotAReport(found)) if found == "text/plain")
        );
        assert!(matches!(
            read_feedback(b""),
            Err(FeedbackError::NotAMessage)
        ));
        assert!(matches!(
            read_feedback(&vec![b'a'; MAX_FEEDBACK_BYTES + 1]),
            Err(FeedbackError::TooLarge)
        ));
    }
}
