//! Emails from the templates: the confirmation email and the update email for a load,
//! multipart text + HTML, with `Message-ID` and the RFC 8058 one-click unsubscribe
//! headers. An update is rendered and formatted once per load, and each recipient's copy
//! is that message with their own address, Message-ID, date and unsubscribe link put in,
//! so a large fan-out neither renders nor builds it again.

use std::{
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use lettre::{
    Address, Message,
    address::Envelope,
    message::{
        Body, Mailbox, MultiPart, SinglePart,
        header::{ContentTransferEncoding, Date, HeaderName, HeaderValue, Headers},
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
/// Stand-ins for the rest of a recipient's own parts in an update's formatted message:
/// characters that lettre writes as they are, in headers and in 7bit bodies alike.
const UNSUBSCRIBE_HTML_MARKER: &str = "RUNRATE-HTML-ESCAPED-UNSUBSCRIBE-MARKER";
const RECIPIENT_MARKER: &str = "runrate-recipient-marker@runrate-marker.invalid";
const MESSAGE_ID_MARKER: &str = "RUNRATE-MESSAGE-ID-MARKER";
/// The date an update's formatted message is built with; its `Date` line is replaced by
/// each copy's own.
const TEMPLATE_DATE: Duration = Duration::from_secs(1_000_000_000);
/// Longest unsubscribe URL put into a formatted update: its lines must stay far inside
/// RFC 5322's 998 characters. A longer one (an unusual `http.public_base_url`) has its
/// copy built by lettre instead.
const MAX_TEMPLATE_URL: usize = 400;

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
    /// The whole message, formatted once; `None` when its parts are not 7bit (lettre then
    /// encodes them, and markers inside an encoding cannot be replaced).
    formatted: Option<FormattedUpdate>,
}

/// A recipient's own part of a formatted update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    DateLine,
    Recipient,
    MessageId,
    UnsubscribeUrl,
    UnsubscribeUrlHtml,
}

#[derive(Debug, Clone)]
enum Piece {
    Same(String),
    Own(Slot),
}

/// An update's message as lettre formatted it for a stand-in recipient, cut where each
/// recipient's own parts go. Every copy shares its MIME boundary.
#[derive(Debug, Clone)]
struct FormattedUpdate {
    pieces: Vec<Piece>,
    length: usize,
}

impl FormattedUpdate {
    /// `formatted` cut at each stand-in; `None` unless the date, recipient and Message-ID
    /// occur once each and the unsubscribe URL at least once.
    fn cut(formatted: &str, stand_ins: &[(&str, Slot)]) -> Option<Self> {
        let mut pieces = Vec::new();
        let mut rest = formatted;
        loop {
            let next = stand_ins
                .iter()
                .filter_map(|(text, slot)| rest.find(text).map(|at| (at, *text, *slot)))
                .min_by_key(|(at, _, _)| *at);
            let Some((at, text, slot)) = next else {
                pieces.push(Piece::Same(rest.to_owned()));
                break;
            };
            pieces.push(Piece::Same(rest[..at].to_owned()));
            pieces.push(Piece::Own(slot));
            rest = &rest[at + text.len()..];
        }
        let count = |wanted: Slot| {
            pieces
                .iter()
                .filter(|piece| matches!(piece, Piece::Own(slot) if *slot == wanted))
                .count()
        };
        let once = [Slot::DateLine, Slot::Recipient, Slot::MessageId];
        if once.iter().any(|slot| count(*slot) != 1) || count(Slot::UnsubscribeUrl) == 0 {
            return None;
        }
        Some(FormattedUpdate {
            pieces,
            length: formatted.len(),
        })
    }
}

/// Whether lettre writes this address in a `To` header exactly as it is: no quoting,
/// no encoding.
fn written_as_is(address: &str) -> bool {
    address
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || b".-_+@".contains(&byte))
}

/// The `Date` header line for `at`, as lettre writes it.
fn date_line(at: SystemTime) -> String {
    let mut headers = Headers::new();
    headers.set(Date::new(at));
    headers.to_string()
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
    match seven_bit(&text) {
        None => Body::new(text),
        Some(bare_newline) => {
            let crlf = if bare_newline { with_crlf(&text) } else { text };
            Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit)
        }
    }
}

/// Whether `text` can go as 7bit, and if so whether any line ends in a bare LF.
fn seven_bit(text: &str) -> Option<bool> {
    const MAX_LINE: usize = 998;
    if !text.is_ascii() || text.contains('\0') {
        return None;
    }
    // Every email lettre builds goes through here: searches that skip ahead (memchr),
    // not a loop over each byte.
    let mut bare_newline = false;
    let mut lines = text.split('\n').peekable();
    while let Some(line) = lines.next() {
        let ended = lines.peek().is_some();
        let content = match line.strip_suffix('\r') {
            Some(content) if ended => content,
            _ => {
                bare_newline |= ended;
                line
            }
        };
        if content.len() > MAX_LINE {
            return None;
        }
    }
    Some(bare_newline)
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

    /// The message lettre builds, dated `date` (now when `None`).
    #[allow(clippy::too_many_arguments)]
    fn message(
        &self,
        to: Mailbox,
        message_id: String,
        subject: &str,
        text: String,
        html: String,
        unsubscribe_url: Option<&str>,
        date: Option<SystemTime>,
    ) -> Result<Message, ComposeError> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id));
        if let Some(date) = date {
            builder = builder.date(date);
        }
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
        builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(SinglePart::plain(body(text)))
                    .singlepart(SinglePart::html(body(html))),
            )
            .map_err(|err| ComposeError::Message(err.to_string()))
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
        let message = self.message(
            to,
            message_id.clone(),
            subject,
            text,
            html,
            unsubscribe_url,
            None,
        )?;
        Ok(OutgoingEmail {
            envelope: message.envelope().clone(),
            bytes: message.formatted(),
            message_id,
        })
    }

    /// An update's message formatted once, for [`Self::personalise`] to fill in.
    fn format_update(&self, subject: &str, text: &str, html: &str) -> Option<FormattedUpdate> {
        seven_bit(text)?;
        seven_bit(html)?;
        let date = SystemTime::UNIX_EPOCH + TEMPLATE_DATE;
        let message = self
            .message(
                Mailbox::from_str(RECIPIENT_MARKER).ok()?,
                MESSAGE_ID_MARKER.to_owned(),
                subject,
                text.to_owned(),
                html.replace(UNSUBSCRIBE_MARKER, UNSUBSCRIBE_HTML_MARKER),
                Some(UNSUBSCRIBE_MARKER),
                Some(date),
            )
            .ok()?;
        let formatted = String::from_utf8(message.formatted()).ok()?;
        FormattedUpdate::cut(
            &formatted,
            &[
                (&date_line(date), Slot::DateLine),
                (RECIPIENT_MARKER, Slot::Recipient),
                (MESSAGE_ID_MARKER, Slot::MessageId),
                (UNSUBSCRIBE_HTML_MARKER, Slot::UnsubscribeUrlHtml),
                (UNSUBSCRIBE_MARKER, Slot::UnsubscribeUrl),
            ],
        )
    }

    /// A recipient's copy of a formatted update; `None` when lettre would write their
    /// address or URL otherwise than as it is.
    fn fill_in(
        &self,
        formatted: &FormattedUpdate,
        delivery: i64,
        to: &str,
        url: &str,
    ) -> Option<Result<OutgoingEmail, ComposeError>> {
        let url_as_is = url.bytes().all(|byte| byte.is_ascii_graphic());
        if !written_as_is(to) || url.len() > MAX_TEMPLATE_URL || !url_as_is {
            return None;
        }
        let recipient = match Address::from_str(to) {
            Ok(address) => address,
            Err(err) => {
                let message = format!("recipient `{to}`: {err}");
                return Some(Err(ComposeError::Message(message)));
            }
        };
        let envelope = match Envelope::new(Some(self.from.email.clone()), vec![recipient]) {
            Ok(envelope) => envelope,
            Err(err) => return Some(Err(ComposeError::Message(err.to_string()))),
        };
        let message_id = self.message_ids.for_delivery(delivery);
        let date = date_line(SystemTime::now());
        let url_html = html_escape(url);
        let mut bytes = Vec::with_capacity(formatted.length + 4 * url.len());
        for piece in &formatted.pieces {
            let text = match piece {
                Piece::Same(text) => text.as_str(),
                Piece::Own(Slot::DateLine) => &date,
                Piece::Own(Slot::Recipient) => to,
                Piece::Own(Slot::MessageId) => &message_id,
                Piece::Own(Slot::UnsubscribeUrl) => url,
                Piece::Own(Slot::UnsubscribeUrlHtml) => &url_html,
            };
            bytes.extend_from_slice(text.as_bytes());
        }
        Some(Ok(OutgoingEmail {
            envelope,
            message_id,
            bytes,
        }))
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
        let text = part("update_email.txt")?;
        let html = part("update_email.html")?;
        Ok(UpdateEmail {
            formatted: self.format_update(&summary.subject, &text, &html),
            text,
            html,
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
        if let Some(formatted) = &update.formatted
            && let Some(email) = self.fill_in(formatted, delivery, to, &url)
        {
            return email;
        }
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

    /// An update as [`EmailComposer::update`] makes it, from these parts.
    fn update(composer: &EmailComposer, text: &str, html: &str) -> UpdateEmail {
        let subject = "runrate: new figures for 2026-Q2";
        UpdateEmail {
            subject: subject.into(),
            text: text.into(),
            html: html.into(),
            formatted: composer.format_update(subject, text, html),
        }
    }

    /// A message with its MIME boundary and date made the same, and headers unfolded.
    fn comparable(email: &OutgoingEmail) -> String {
        let text = String::from_utf8(email.bytes.clone()).unwrap();
        let boundary = text
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a MIME boundary")
            .to_owned();
        text.replace(&boundary, "BOUNDARY")
            .replace("\r\n ", " ")
            .lines()
            .filter(|line| !line.starts_with("Date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_copy_filled_into_the_formatted_update_is_the_message_lettre_builds() {
        let composer = composer("leave@example.com");
        let text = format!("New figures.\r\nUnsubscribe: {UNSUBSCRIBE_MARKER}\r\n");
        let html =
            format!("<p>New &amp; revised</p><a href=\"{UNSUBSCRIBE_MARKER}\">Unsubscribe</a>\r\n");
        let update = update(&composer, &text, &html);
        assert!(update.formatted.is_some(), "7bit parts are formatted once");
        let (to, token) = ("reader+q2@example.com", "42.TOKEN_-x");
        let filled = composer.personalise(&update, 42, to, token).unwrap();
        let url = composer.unsubscribe_url(token);
        let built = composer
            .build(
                42,
                to,
                &update.subject,
                text.replace(UNSUBSCRIBE_MARKER, &url),
                html.replace(UNSUBSCRIBE_MARKER, &html_escape(&url)),
                Some(&url),
            )
            .unwrap();
        assert_eq!(comparable(&filled), comparable(&built));
        assert_eq!(filled.message_id, built.message_id);
        assert_eq!(filled.envelope, built.envelope);
        let date = header(&filled, "Date").expect("a Date");
        let now = std::time::SystemTime::now();
        assert!(
            [now, now - Duration::from_secs(1)]
                .iter()
                .any(|at| date_line(*at) == format!("Date: {date}\r\n")),
            "each copy is dated when made: {date}"
        );
    }

    #[test]
    fn an_update_that_lettre_must_encode_is_built_for_each_copy() {
        let composer = composer("");
        let text = format!("Zürich: {UNSUBSCRIBE_MARKER}\r\n");
        let update = update(&composer, &text, "<p>ok</p>");
        assert!(update.formatted.is_none());
        let email = composer
            .personalise(&update, 7, "reader@example.com", "TOKEN123")
            .unwrap();
        let body = String::from_utf8(email.bytes).unwrap();
        assert!(
            body.contains("Content-Transfer-Encoding: quoted-printable"),
            "{body}"
        );
        // An address lettre would quote is not put in as it is.
        assert!(!written_as_is("\"odd address\"@example.com"));
    }

    #[test]
    fn updates_carry_both_unsubscribe_headers_and_a_message_id() {
        let text = format!("Unsubscribe: {UNSUBSCRIBE_MARKER}");
        let html = format!("<a href=\"{UNSUBSCRIBE_MARKER}\">Unsubscribe</a>");
        let with_mailto = composer("leave@example.com");
        let email = with_mailto
            .personalise(
                &update(&with_mailto, &text, &html),
                7,
                "reader@example.com",
                "TOKEN123",
            )
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
        let plain = composer("");
        let without_mailto = plain
            .personalise(
                &update(&plain, &text, &html),
                7,
                "reader@example.com",
                "TOKEN123",
            )
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
