//! SMTP with lettre, over connections runrate opens itself: TCP_NODELAY set (lettre
//! leaves Nagle on, which costs a delayed ACK per message), a few long-lived connections
//! reused across messages, every send bounded by a timeout (lettre's own only covers
//! connecting), and TLS as none, STARTTLS or implicit.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use lettre::transport::smtp::{
    Error as SmtpError,
    authentication::{Credentials, Mechanism},
    client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
    commands::{Data, Mail, Rcpt},
    extension::{ClientId, Extension, MailBodyParameter, MailParameter},
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
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    implicit_tls: Option<TlsConnector>,
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
            idle: Mutex::new(Vec::new()),
            implicit_tls,
        })
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<AsyncSmtpConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let connect = async {
            let stream = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|err| {
                    SendError::Transient(format!(
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
            Ok(connection)
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "no SMTP greeting from {}:{} within {:?}",
                    self.host, self.port, self.connect_timeout
                )))
            })
    }

    /// One message over one connection: MAIL FROM, RCPT TO, DATA.
    async fn transact(
        connection: &mut AsyncSmtpConnection,
        email: &OutgoingEmail,
    ) -> Result<(), (Step, SmtpError)> {
        let mut parameters = Vec::new();
        if !email.bytes.is_ascii()
            && connection
                .server_info()
                .supports_feature(Extension::EightBitMime)
        {
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        connection
            .command(Mail::new(email.envelope.from().cloned(), parameters))
            .await
            .map_err(|err| (Step::MailFrom, err))?;
        for recipient in email.envelope.to() {
            connection
                .command(Rcpt::new(recipient.clone(), Vec::new()))
                .await
                .map_err(|err| (Step::Recipient, err))?;
        }
        connection
            .command(Data)
            .await
            .map_err(|err| (Step::Data, err))?;
        connection
            .message(&email.bytes)
            .await
            .map_err(|err| (Step::Data, err))?;
        Ok(())
    }
}

/// Whom a failure is about: a 5xx to the recipient or the message rejects the address;
/// a 5xx to MAIL FROM (or while connecting) is about us; anything else is transient.
fn classify(step: Step, err: &SmtpError) -> SendError {
    let message = err.to_string();
    match step {
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
        let reused = self.idle().pop();
        let (mut connection, was_reused) = match reused {
            Some(connection) => (connection, true),
            None => (self.connect().await?, false),
        };
        let mut outcome =
            tokio::time::timeout(self.send_timeout, Self::transact(&mut connection, email)).await;
        // An idle connection the server has since closed fails before any reply: open a
        // fresh one and try once more.
        if was_reused
            && matches!(&outcome, Ok(Err((Step::MailFrom, err))) if err.status().is_none())
        {
            connection = self.connect().await?;
            outcome =
                tokio::time::timeout(self.send_timeout, Self::transact(&mut connection, email))
                    .await;
        }
        match outcome {
            Ok(Ok(())) => {
                let mut idle = self.idle();
                if idle.len() < self.max_idle && !connection.has_broken() {
                    idle.push(connection);
                }
                Ok(())
            }
            Ok(Err((step, err))) => {
                connection.abort().await;
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
