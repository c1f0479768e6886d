//! SMTP with lettre, over connections runrate opens itself: TCP_NODELAY set (lettre
//! leaves Nagle on, which costs a delayed ACK per message), a few long-lived connections
//! reused across messages up to a count and an age, every send bounded by a timeout
//! (lettre's own only covers connecting), and TLS as none, STARTTLS or implicit.
//! lettre builds the messages and speaks each command; the transaction is ours, so that
//! MAIL, RCPT and DATA go out pipelined (RFC 2920) when the server offers it: two round
//! trips per email instead of four.

mod batch;

use batch::SmtpBatch;

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use lettre::transport::smtp::{
    Error as SmtpError,
    authentication::{Credentials, Mechanism},
    client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
    commands::{Data, Ehlo, Mail, Rcpt, Rset},
    extension::{ClientId, MailBodyParameter, MailParameter},
    response::Response,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream, rustls};

use super::{MailBatch, Mailer, Outcome, OutgoingEmail, SendError};
use crate::{
    settings::{SmtpSettings, SmtpTls},
    telemetry::{self, OpenGuard},
};

pub struct SmtpMailer {
    host: String,
    port: u16,
    tls: SmtpTls,
    credentials: Option<Credentials>,
    hello: ClientId,
    connect_timeout: Duration,
    send_timeout: Duration,
    max_idle: usize,
    max_messages_per_connection: u32,
    max_connection_age: Duration,
    idle: Mutex<Vec<Session>>,
    implicit_tls: Option<TlsConnector>,
}

/// What the server offers that lettre's `ServerInfo` does not record (it drops
/// PIPELINING), read from our own EHLO once a connection is ready.
#[derive(Clone, Copy, Debug, Default)]
struct ServerAbilities {
    pipelining: bool,
    eight_bit_mime: bool,
    smtp_utf8: bool,
}

impl ServerAbilities {
    fn from_ehlo(reply: &Response) -> Self {
        let mut abilities = ServerAbilities::default();
        for line in reply.message() {
            match line.split_whitespace().next().unwrap_or_default() {
                keyword if keyword.eq_ignore_ascii_case("PIPELINING") => {
                    abilities.pipelining = true
                }
                keyword if keyword.eq_ignore_ascii_case("8BITMIME") => {
                    abilities.eight_bit_mime = true
                }
                keyword if keyword.eq_ignore_ascii_case("SMTPUTF8") => abilities.smtp_utf8 = true,
                _ => {}
            }
        }
        abilities
    }
}

/// An open connection, what its server offers, and how much it has carried: providers
/// cap messages per connection and close old ones, so runrate retires them first.
struct Session {
    connection: AsyncSmtpConnection,
    abilities: ServerAbilities,
    opened: Instant,
    messages: u32,
    _open: OpenGuard,
}

/// The SMTP step a failure happened at: it decides whom a 5xx reply is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connect,
    MailFrom,
    Recipient,
    Data,
}

impl SmtpMailer {
    pub fn new(settings: &SmtpSettings, from: &str) -> anyhow::Result<Self> {
        // Greet with the sender's domain: a name the receiving server can check.
        let hello = from
            .rsplit_once('@')
            .map(|(_, domain)| domain.trim_end_matches('>').trim().to_owned())
            .filter(|domain| !domain.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        let credentials = (!settings.username.is_empty()).then(|| {
            Credentials::new(
                settings.username.clone(),
                settings.password.expose().to_owned(),
            )
        });
        let implicit_tls = (settings.tls == SmtpTls::Implicit).then(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
            config.map(|config| TlsConnector::from(Arc::new(config)))
        });
        let implicit_tls = implicit_tls
            .transpose()
            .map_err(|err| anyhow::anyhow!("cannot set up TLS for SMTP: {err}"))?;
        Ok(SmtpMailer {
            host: settings.host.clone(),
            port: settings.port,
            tls: settings.tls,
            credentials,
            hello: ClientId::Domain(hello),
            connect_timeout: settings.connect_timeout.0,
            send_timeout: settings.send_timeout.0,
            max_idle: settings.pool_size as usize,
            max_messages_per_connection: settings.max_messages_per_connection,
            max_connection_age: settings.max_connection_age.0,
            idle: Mutex::new(Vec::new()),
            implicit_tls,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a session may carry another message besides `carrying` already on it.
    fn has_room(&self, session: &Session, carrying: u32) -> bool {
        session.messages + carrying < self.max_messages_per_connection
            && session.opened.elapsed() < self.max_connection_age
            && !session.connection.has_broken()
    }

    /// An idle session with room left, or a new one; idle ones past their caps are closed.
    async fn checkout(&self) -> Result<(Session, bool), SendError> {
        loop {
            let Some(session) = self.idle().pop() else {
                return Ok((self.connect().await?, false));
            };
            if self.has_room(&session, 0) {
                return Ok((session, true));
            }
            self.retire(session).await;
        }
    }

    /// Puts a session back for the next message, or closes it when it has done its share.
    async fn checkin(&self, session: Session) {
        if self.has_room(&session, 0) {
            let mut idle = self.idle();
            if idle.len() < self.max_idle {
                idle.push(session);
                return;
            }
        }
        self.retire(session).await;
    }

    /// A send that ran out of time: the server may or may not have taken the email.
    fn no_answer(&self) -> SendError {
        SendError::Transient(format!(
            "the SMTP server did not answer within {:?}",
            self.send_timeout
        ))
    }

    /// Says QUIT (briefly: the answer changes nothing) and closes the connection.
    async fn retire(&self, mut session: Session) {
        let quit = session.connection.quit();
        let _ = tokio::time::timeout(RETIRE_TIMEOUT, quit).await;
    }

    async fn connect(&self) -> Result<Session, SendError> {
        let connect = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|err| {
                    SendError::Throttled(format!(
                        "cannot connect to {}:{}: {err}",
                        self.host, self.port
                    ))
                })?;
            stream
                .set_nodelay(true)
                .map_err(|err| SendError::Transient(format!("cannot set TCP_NODELAY: {err}")))?;
            let stream: Box<dyn AsyncTokioStream> = match &self.implicit_tls {
                None => Box::new(stream),
                Some(connector) => {
                    let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(
                        |err| SendError::Transient(format!("bad TLS server name: {err}")),
                    )?;
                    let tls = connector.connect(name, stream).await.map_err(|err| {
                        SendError::Transient(format!(
                            "TLS handshake with {} failed: {err}",
                            self.host
                        ))
                    })?;
                    Box::new(ImplicitTls(tls))
                }
            };
            let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
                .await
                .map_err(|err| classify(Step::Connect, &err))?;
            if self.tls == SmtpTls::Starttls {
                let parameters = TlsParameters::new_rustls(self.host.clone()).map_err(|err| {
                    SendError::Transient(format!("cannot set up STARTTLS: {err}"))
                })?;
                connection
                    .starttls(parameters, &self.hello)
                    .await
                    .map_err(|err| classify(Step::Connect, &err))?;
            }
            if let Some(credentials) = &self.credentials {
                connection
                    .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(|err| classify(Step::Connect, &err))?;
            }
            let ehlo = connection
                .command(Ehlo::new(self.hello.clone()))
                .await
                .map_err(|err| classify(Step::Connect, &err))?;
            Ok(Session {
                connection,
                abilities: ServerAbilities::from_ehlo(&ehlo),
                opened: Instant::now(),
                messages: 0,
                _open: OpenGuard::new(metrics::gauge!(telemetry::SMTP_CONNECTIONS_OPEN)),
            })
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Throttled(format!(
                    "no SMTP greeting from {}:{} within {:?}",
                    self.host, self.port, self.connect_timeout
                )))
            })
    }

    /// After a refused transaction, RSET readies the connection for the next message;
    /// a connection that cannot is closed.
    async fn recover(&self, mut session: Session) -> Option<Session> {
        let reset = tokio::time::timeout(RETIRE_TIMEOUT, session.connection.command(Rset)).await;
        if matches!(reset, Ok(Ok(_))) {
            Some(session)
        } else {
            Self::abort(session).await;
            None
        }
    }

    /// Closes a connection after a failure. lettre's abort waits for the answer to its
    /// QUIT with no time limit, which a hung server never gives.
    async fn abort(mut session: Session) {
        let _ = tokio::time::timeout(RETIRE_TIMEOUT, session.connection.abort()).await;
    }
}

/// The MAIL FROM and RCPT TO commands of an email, with the parameters its content and
/// addresses need where the server offers them.
fn envelope_commands(abilities: ServerAbilities, email: &OutgoingEmail) -> (Mail, Vec<Rcpt>) {
    let mut parameters = Vec::new();
    if !email.bytes.is_ascii() && abilities.eight_bit_mime {
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let international = email
        .envelope
        .to()
        .iter()
        .chain(email.envelope.from())
        .any(|address| !AsRef::<str>::as_ref(address).is_ascii());
    if international && abilities.smtp_utf8 {
        parameters.push(MailParameter::SmtpUtfEight);
    }
    let mail = Mail::new(email.envelope.from().cloned(), parameters);
    let recipients = email
        .envelope
        .to()
        .iter()
        .map(|recipient| Rcpt::new(recipient.clone(), Vec::new()))
        .collect();
    (mail, recipients)
}

/// Message content as it goes after DATA: a line that starts with a dot gets another
/// (RFC 5321 section 4.5.2), and the end-of-data line follows. `None` for content that
/// is not UTF-8, which only lettre's own writer can send.
fn data_block(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut block = String::with_capacity(text.len() + 8);
    let mut rest = text;
    if rest.starts_with('.') {
        block.push('.');
    }
    while let Some(at) = memchr::memmem::find(rest.as_bytes(), b"\r\n.") {
        block.push_str(&rest[..at + 2]);
        block.push('.');
        rest = &rest[at + 2..];
    }
    block.push_str(rest);
    block.push_str("\r\n.\r\n");
    Some(block)
}

/// Writes, in one go, the content of the email whose data phase is open (if any) and
/// the MAIL, RCPT and DATA commands of `next` (if any), then reads every reply, so the
/// connection stays in step whatever fails. Returns the reply to the content, and
/// whether `next`'s data phase is open now.
async fn exchange(
    session: &mut Session,
    content: Option<&str>,
    next: Option<&OutgoingEmail>,
) -> (
    Option<Result<(), SmtpError>>,
    Option<Result<(), (Step, SmtpError)>>,
) {
    let mut wire = String::new();
    if let Some(content) = content {
        wire.push_str(content);
    }
    let mut recipients = 0;
    if let Some(email) = next {
        let (mail, rcpts) = envelope_commands(session.abilities, email);
        recipients = rcpts.len();
        wire.push_str(&mail.to_string());
        rcpts
            .iter()
            .for_each(|rcpt| wire.push_str(&rcpt.to_string()));
        wire.push_str(&Data.to_string());
    }
    let connection = &mut session.connection;
    let first = connection.command(&wire).await.map(drop);
    let (content_reply, mail_reply) = match content {
        Some(_) => {
            let content_reply = Some(first);
            if next.is_none() {
                return (content_reply, None);
            }
            (content_reply, connection.read_response().await.map(drop))
        }
        None => (None, first),
    };
    let mut recipient_failure = None;
    for _ in 0..recipients {
        if let Err(err) = connection.read_response().await {
            recipient_failure.get_or_insert(err);
        }
    }
    let data_reply = connection.read_response().await;
    let failure = match (mail_reply, recipient_failure) {
        (Err(err), _) => Some((Step::MailFrom, err)),
        (Ok(()), Some(err)) => Some((Step::Recipient, err)),
        (Ok(()), None) => None,
    };
    let envelope = match failure {
        Some(failure) => {
            if data_reply.is_ok() {
                // A server that opened the data phase anyway gets an empty message to
                // close it; it has no recipient to deliver it to.
                let _ = connection.message(b"").await;
            }
            Err(failure)
        }
        None => data_reply.map(drop).map_err(|err| (Step::Data, err)),
    };
    (content_reply, Some(envelope))
}

/// One email's whole transaction. With PIPELINING the envelope goes out in one write;
/// without it, one command at a time.
async fn transact(session: &mut Session, email: &OutgoingEmail) -> Result<(), (Step, SmtpError)> {
    if session.abilities.pipelining {
        let (_, envelope) = exchange(session, None, Some(email)).await;
        envelope.unwrap_or(Ok(()))?;
    } else {
        let (mail, recipients) = envelope_commands(session.abilities, email);
        let connection = &mut session.connection;
        connection
            .command(mail)
            .await
            .map_err(|err| (Step::MailFrom, err))?;
        for recipient in recipients {
            connection
                .command(recipient)
                .await
                .map_err(|err| (Step::Recipient, err))?;
        }
        connection
            .command(Data)
            .await
            .map_err(|err| (Step::Data, err))?;
    }
    match data_block(&email.bytes) {
        Some(block) => session.connection.command(block).await,
        None => session.connection.message(&email.bytes).await,
    }
    .map_err(|err| (Step::Data, err))?;
    session.messages += 1;
    Ok(())
}

/// How long closing or resetting a connection may take.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Replies that say "slow down" to the sender as a whole, not "not this recipient":
/// 421 (closing), 454 (throttling, as Amazon SES answers), and 451/452 anywhere but to
/// RCPT TO, where they mean this recipient later (greylisting, a full mailbox).
fn is_throttling(step: Step, code: u16) -> bool {
    match code {
        421 | 454 => true,
        451 | 452 => step != Step::Recipient,
        _ => false,
    }
}

/// Whom a failure is about: a 5xx to the recipient or the message rejects the address;
/// a 5xx to MAIL FROM (or while connecting) is about us; a throttling reply slows the
/// sender down; anything else is transient.
fn classify(step: Step, err: &SmtpError) -> SendError {
    let message = err.to_string();
    let code = err.status().map(u16::from);
    match step {
        _ if code.is_some_and(|code| is_throttling(step, code)) => SendError::Throttled(message),
        _ if !err.is_permanent() => SendError::Transient(message),
        Step::Recipient | Step::Data => SendError::Rejected(message),
        Step::MailFrom => SendError::SenderRefused(message),
        // A permanent refusal while connecting or authenticating is a configuration
        // problem: keep retrying (and logging) rather than blame the address.
        Step::Connect => SendError::Transient(message),
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), SendError> {
        // A fresh batch holds nothing open, so nothing else can have an outcome.
        let mut batch = SmtpBatch::new(self, false);
        let result = batch.send_now(email, &mut Vec::new()).await;
        batch.finish_session().await;
        result
    }

    fn batch(&self, lookahead: bool) -> Box<dyn MailBatch + '_> {
        Box::new(SmtpBatch::new(self, lookahead))
    }
}

/// A TLS stream as lettre's transport, for implicit TLS (SMTPS) on our own socket.
struct ImplicitTls(TlsStream<TcpStream>);

impl fmt::Debug for ImplicitTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImplicitTls")
    }
}

impl AsyncTokioStream for ImplicitTls {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for ImplicitTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for ImplicitTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::data_block;

    #[test]
    fn lines_that_start_with_a_dot_get_another_and_the_end_line_follows() {
        let block = data_block(b".first\r\nmiddle\r\n.\r\n..two\r\nlast.").unwrap();
        assert_eq!(block, "..first\r\nmiddle\r\n..\r\n...two\r\nlast.\r\n.\r\n");
    }

    #[test]
    fn content_that_is_not_utf8_is_left_to_lettre() {
        assert_eq!(data_block(b"caf\xe9"), None);
    }
}
