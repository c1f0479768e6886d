//! SMTP with lettre, over connections runrate opens itself: TCP_NODELAY set (lettre
//! leaves Nagle on, which costs a delayed ACK per message), a few long-lived connections
//! reused across messages up to a count and an age, every send bounded by a timeout
//! (lettre's own only covers connecting), and TLS as none, STARTTLS or implicit.
//! lettre builds the messages and speaks each command; the transaction is ours, so that
//! MAIL, RCPT and DATA go out pipelined (RFC 2920) when the server offers it: two round
//! trips per email instead of four.

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

use super::{Mailer, OutgoingEmail, SendError};
use crate::settings::{SmtpSettings, SmtpTls};

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
}

/// The SMTP step a failure happened at: it decides whom a 5xx reply is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connect,
    MailFrom,
    Recipient,
    Data,
}

/// Commands written in one go, as RFC 2920 allows for MAIL, RCPT and DATA (lettre
/// prints each with its CRLF).
struct Pipelined(Vec<String>);

impl fmt::Display for Pipelined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|command| f.write_str(command))
    }
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

    /// Whether a session may carry another message.
    fn has_room(&self, session: &Session) -> bool {
        session.messages < self.max_messages_per_connection
            && session.opened.elapsed() < self.max_connection_age
            && !session.connection.has_broken()
    }

    /// An idle session with room left, or a new one; idle ones past their caps are closed.
    async fn checkout(&self) -> Result<(Session, bool), SendError> {
        loop {
            let Some(session) = self.idle().pop() else {
                return Ok((self.connect().await?, false));
            };
            if self.has_room(&session) {
                return Ok((session, true));
            }
            self.retire(session).await;
        }
    }

    /// Puts a session back for the next message, or closes it when it has done its share.
    async fn checkin(&self, session: Session) {
        if self.has_room(&session) {
            let mut idle = self.idle();
            if idle.len() < self.max_idle {
                idle.push(session);
                return;
            }
        }
        self.retire(session).await;
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

    /// One message over one connection. With PIPELINING, MAIL FROM, RCPT TO and DATA go
    /// out in one write and their replies are read after; without it, one at a time.
    async fn transact(
        session: &mut Session,
        email: &OutgoingEmail,
    ) -> Result<(), (Step, SmtpError)> {
        let abilities = session.abilities;
        let connection = &mut session.connection;
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
        let recipients: Vec<Rcpt> = email
            .envelope
            .to()
            .iter()
            .map(|recipient| Rcpt::new(recipient.clone(), Vec::new()))
            .collect();
        if abilities.pipelining {
            let mut group = vec![mail.to_string()];
            group.extend(recipients.iter().map(ToString::to_string));
            group.push(Data.to_string());
            // Every reply is read, failed or not, so the connection stays in step.
            let mail_reply = connection.command(Pipelined(group)).await;
            let mut recipient_failure = None;
            for _ in &recipients {
                if let Err(err) = connection.read_response().await {
                    recipient_failure.get_or_insert(err);
                }
            }
            let data_reply = connection.read_response().await;
            let failure = match (mail_reply, recipient_failure) {
                (Err(err), _) => Some((Step::MailFrom, err)),
                (Ok(_), Some(err)) => Some((Step::Recipient, err)),
                (Ok(_), None) => None,
            };
            if let Some(failure) = failure {
                if data_reply.is_ok() {
                    // A server that opened the data phase anyway gets an empty message
                    // to close it; it has no recipient to deliver it to.
                    let _ = connection.message(b"").await;
                }
                return Err(failure);
            }
            data_reply.map_err(|err| (Step::Data, err))?;
        } else {
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
        connection
            .message(&email.bytes)
            .await
            .map_err(|err| (Step::Data, err))?;
        session.messages += 1;
        Ok(())
    }

    /// After a refused transaction, RSET readies the connection for the next message;
    /// a connection that cannot is closed.
    async fn recover(&self, mut session: Session) {
        let reset = tokio::time::timeout(RETIRE_TIMEOUT, session.connection.command(Rset)).await;
        if matches!(reset, Ok(Ok(_))) {
            self.checkin(session).await;
        } else {
            Self::abort(session).await;
        }
    }

    /// Closes a connection after a failure. lettre's abort waits for the answer to its
    /// QUIT with no time limit, which a hung server never gives.
    async fn abort(mut session: Session) {
        let _ = tokio::time::timeout(RETIRE_TIMEOUT, session.connection.abort()).await;
    }
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
        let (mut session, was_reused) = self.checkout().await?;
        let mut outcome =
            tokio::time::timeout(self.send_timeout, Self::transact(&mut session, email)).await;
        // An idle connection the server has since closed fails before any reply: open a
        // fresh one and try once more.
        if was_reused
            && matches!(&outcome, Ok(Err((Step::MailFrom, err))) if err.status().is_none())
        {
            session = self.connect().await?;
            outcome =
                tokio::time::timeout(self.send_timeout, Self::transact(&mut session, email)).await;
        }
        match outcome {
            Ok(Ok(())) => {
                self.checkin(session).await;
                Ok(())
            }
            Ok(Err((step, err))) => {
                if err.status().is_some() {
                    self.recover(session).await;
                } else {
                    Self::abort(session).await;
                }
                Err(classify(step, &err))
            }
            Err(_) => Err(SendError::Transient(format!(
                "the SMTP server did not answer within {:?}",
                self.send_timeout
            ))),
        }
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
