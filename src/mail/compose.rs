//! Emails from the templates: the confirmation email and the update email for a load,
//! multipart text + HTML, with `Message-ID` and the RFC 8058 one-click unsubscribe
//! headers. An update is rendered once per load and then personalised per recipient by
//! swapping in their unsubscribe link, so a large fan-out does not render it again.

use std::{str::FromStr, sync::Arc, time::Duration};

use lettre::{
    Message,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{ContentTransferEncoding, HeaderName, HeaderValue},
    },
};
use minijinja::{Value, context};

use super::{OutgoingEmail, message_id::MessageIds};
use crate::catalog::summary::UpdateSummary;
use crate::{
    catalog::ReadSnapshot,
    domain::{LoadId, duration_in_words},
    sealing::TokenSealer,
    settings::{HttpSettings, MailSettings},
    templates::{ComparisonTable, render},
};

/// Stands in for a recipient's unsubscribe URL in a rendered update; made only of
/// characters no template escapes.
const UNSUBSCRIBE_MARKER: &str = "RUNRATE-UNSUBSCRIBE-URL-MARKER";

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("cannot render the {0} email: {1}")]
    Template(&'static str, minijinja::Error),
    #[error("cannot build the email: {0}")]
    Message(String),
    #[error("load {0} has no figures to announce")]
    NothingToAnnounce(LoadId),
}

pub struct EmailComposer {
    from: Mailbox,
    base_url: String,
    unsubscribe_mailto: Option<String>,
    message_id_domain: String,
    message_ids: MessageIds,
    confirmation_ttl: Duration,
}

/// An update email rendered for every recipient of a load, before personalisation.
#[derive(Debug, Clone)]
pub struct UpdateEmail {
    subject: String,
    text: String,
    html: String,
}

/// A header lettre has no type for, with its value as given.
fn list_header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

/// A part's body: ASCII text with no line past RFC 5322's 998 characters goes as it is
/// (7bit), sparing every recipient's copy the quoted-printable encoding lettre would
/// choose for any line past 76 (an unsubscribe URL is longer); other text is left to
/// lettre to encode.
fn body(text: String) -> Body {
    const MAX_LINE: usize = 998;
    // Every recipient's copy goes through here: searches that skip ahead (memchr),
    // not a loop over each byte.
    let mut seven_bit = text.is_ascii() && !text.contains('\0');
    let mut bare_newline = false;
    let mut lines = text.split('\n').peekable();
    while seven_bit && let Some(line) = lines.next() {
        let ended = lines.peek().is_some();
        let content = match line.strip_suffix('\r') {
            Some(content) if ended => content,
            _ => {
                bare_newline |= ended;
                line
            }
        };
        seven_bit = content.len() <= MAX_LINE;
    }
    if !seven_bit {
        return Body::new(text);
    }
    let crlf = if bare_newline { with_crlf(&text) } else { text };
    Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
}

/// Text with every line ended by CRLF, as SMTP carries it.
fn with_crlf(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\n', "\r\n")
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl EmailComposer {
    pub fn new(
        mail: &MailSettings,
        http: &HttpSettings,
        confirmation_ttl: Duration,
        tokens: Arc<TokenSealer>,
    ) -> anyhow::Result<Self> {
        let from = Mailbox::from_str(&mail.from)
            .map_err(|err| anyhow::anyhow!("mail.from `{}` is not an address: {err}", mail.from))?;
        let message_id_domain = from.email.domain().to_owned();
        Ok(EmailComposer {
            from,
            base_url: http.public_base_url.trim_end_matches('/').to_owned(),
            unsubscribe_mailto: (!mail.unsubscribe_mailto.is_empty())
                .then(|| mail.unsubscribe_mailto.clone()),
            message_ids: MessageIds::new(tokens, &message_id_domain),
            message_id_domain,
            confirmation_ttl,
        })
    }

    /// How this composer's Message-IDs name deliveries.
    pub fn message_ids(&self) -> MessageIds {
        self.message_ids.clone()
    }

    pub fn confirm_url(&self, token: &str) -> String {
        format!("{}/confirm?token={token}", self.base_url)
    }

    pub fn unsubscribe_url(&self, token: &str) -> String {
        format!("{}/unsubscribe?token={token}", self.base_url)
    }

    fn build(
        &self,
        delivery: i64,
        to: &str,
        subject: &str,
        text: String,
        html: String,
        unsubscribe_url: Option<&str>,
    ) -> Result<OutgoingEmail, ComposeError> {
        let to: Mailbox = to
            .parse()
            .map_err(|err| ComposeError::Message(format!("recipient `{to}`: {err}")))?;
        let message_id = self.message_ids.for_delivery(delivery);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id.clone()));
        if let Some(url) = unsubscribe_url {
            let mut value = format!("<{url}>");
            if let Some(mailto) = &self.unsubscribe_mailto {
                value.push_str(&format!(", <mailto:{mailto}?subject=unsubscribe>"));
            }
            // RFC 2919's List-Id names the list for mail clients' filters; RFC 2369's
            // List-Unsubscribe and RFC 8058's List-Unsubscribe-Post offer one click.
            let list_id = format!("runrate updates <updates.{}>", self.message_id_domain);
            builder = builder
                .raw_header(list_header("List-Id", list_id))
                .raw_header(list_header("List-Unsubscribe", value))
                .raw_header(list_header(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(body(text)))
                    .singlepart(SinglePart::html(body(html))),
            )
            .map_err(|err| ComposeError::Message(err.to_string()))?;
        Ok(OutgoingEmail {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
            message_id,
        })
    }

    pub fn confirmation(
        &self,
        delivery: i64,
        to: &str,
        token: &str,
    ) -> Result<OutgoingEmail, ComposeError> {
        let confirm_url = self.confirm_url(token);
        let context = context! {
            confirm_url_html => Value::from_safe_string(html_escape(&confirm_url)),
            confirm_url => confirm_url,
            ttl => duration_in_words(self.confirmation_ttl),
        };
        let text = render("confirmation_email.txt", &context)
            .map_err(|err| ComposeError::Template("confirmation", err))?;
        let html = render("confirmation_email.html", &context)
            .map_err(|err| ComposeError::Template("confirmation", err))?;
        self.build(
            delivery,
            to,
            "Confirm your runrate subscription",
            text,
            html,
            None,
        )
    }

    /// Renders the update for a load, as known when the load was recorded.
    pub fn update(
        &self,
        snapshot: &ReadSnapshot,
        load: LoadId,
    ) -> Result<UpdateEmail, ComposeError> {
        let summary =
            UpdateSummary::of_load(snapshot, load).ok_or(ComposeError::NothingToAnnounce(load))?;
        let table = ComparisonTable::for_load(snapshot, load)
            .ok_or(ComposeError::NothingToAnnounce(load))?;
        let context = context! {
            summary => &summary,
            table => table,
            base_url => self.base_url.clone(),
            base_url_html => Value::from_safe_string(html_escape(&self.base_url)),
            unsubscribe_url => UNSUBSCRIBE_MARKER,
        };
        // Lines end in CRLF from here on, so that no recipient's copy converts them.
        let part = |name| {
            render(name, &context)
                .map(|text| with_crlf(&text))
                .map_err(|err| ComposeError::Template("update", err))
        };
        Ok(UpdateEmail {
            text: part("update_email.txt")?,
            html: part("update_email.html")?,
            subject: summary.subject,
        })
    }

    /// The update for one recipient, with their own unsubscribe link.
    pub fn personalise(
        &self,
        update: &UpdateEmail,
        delivery: i64,
        to: &str,
        unsubscribe_token: &str,
    ) -> Result<OutgoingEmail, ComposeError> {
        let url = self.unsubscribe_url(unsubscribe_token);
        self.build(
            delivery,
            to,
            &update.subject,
            update.text.replace(UNSUBSCRIBE_MARKER, &url),
            update.html.replace(UNSUBSCRIBE_MARKER, &html_escape(&url)),
            Some(&url),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn composer(mailto: &str) -> EmailComposer {
        let mut settings = Settings::default();
        settings.mail.unsubscribe_mailto = mailto.to_owned();
        settings.http.public_base_url = "https://runrate.example.com/".into();
        let tokens = Arc::new(TokenSealer::new([1; 32]));
        EmailComposer::new(
            &settings.mail,
            &settings.http,
            Duration::from_secs(3600),
            tokens,
        )
        .unwrap()
    }

    fn header(email: &OutgoingEmail, name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&email.bytes).replace("\r\n ", " ");
        text.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    }

    #[test]
    fn updates_carry_both_unsubscribe_headers_and_a_message_id() {
        let update = UpdateEmail {
            subject: "runrate: new figures for 2026-Q2".into(),
            text: format!("Unsubscribe: {UNSUBSCRIBE_MARKER}"),
            html: format!("<a href=\"{UNSUBSCRIBE_MARKER}\">Unsubscribe</a>"),
        };
        let email = composer("leave@example.com")
            .personalise(&update, 7, "reader@example.com", "TOKEN123")
            .unwrap();
        assert_eq!(
            header(&email, "List-Unsubscribe").as_deref(),
            Some(
                "<https://runrate.example.com/unsubscribe?token=TOKEN123>, <mailto:leave@example.com?subject=unsubscribe>"
            )
        );
        assert_eq!(
            header(&email, "List-Unsubscribe-Post").as_deref(),
            Some("List-Unsubscribe=One-Click")
        );
        assert_eq!(
            header(&email, "Message-ID").as_deref(),
            Some(email.message_id.as_str())
        );
        assert!(email.message_id.ends_with("@localhost>"));
        let without_mailto = composer("")
            .personalise(&update, 7, "reader@example.com", "TOKEN123")
            .unwrap();
        assert_eq!(
            header(&without_mailto, "List-Unsubscribe").as_deref(),
            Some("<https://runrate.example.com/unsubscribe?token=TOKEN123>")
        );
    }

    #[test]
    fn confirmation_emails_have_no_unsubscribe_headers() {
        let email = composer("")
            .confirmation(8, "reader@example.com", "TOKEN")
            .unwrap();
        assert!(header(&email, "List-Unsubscribe").is_none());
        assert_eq!(
            header(&email, "Subject").as_deref(),
            Some("Confirm your runrate subscription")
        );
    }

    #[test]
    fn ascii_text_goes_as_7bit_with_crlf_and_a_line_past_998_is_encoded() {
        let encoded = |text: &str| {
            String::from_utf8(SinglePart::plain(body(text.to_owned())).formatted()).unwrap()
        };
        let short = encoded("one\ntwo\r\nthree");
        assert!(short.contains("Content-Transfer-Encoding: 7bit"), "{short}");
        assert!(
            short.ends_with("\r\n\r\none\r\ntwo\r\nthree\r\n"),
            "{short:?}"
        );
        let long = encoded(&"x".repeat(999));
        assert!(!long.contains("7bit"), "{long}");
        let longest = encoded(&format!("{}\r\nend", "x".repeat(998)));
        assert!(longest.contains("7bit"), "{longest}");
    }
}
