//! A real SMTP server for the tests, on a free port: the protocol is the `mailin`
//! library's; this file only moves its lines over TCP and keeps what it accepts. A fault
//! plan can make it answer 4xx or 5xx to a recipient, drop the connection after the data,
//! or never answer — the failures a real server produces that a test cannot summon.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mailin::{Action, Handler, Response, SessionBuilder};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Notify,
};

/// What the server does with one recipient's delivery attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Accept,
    /// `451` to RCPT TO.
    TemporaryFailure,
    /// `550` to RCPT TO.
    PermanentFailure,
    /// Read the whole message, then close the connection without answering.
    DropAfterData,
    /// Read the whole message, then never answer.
    HangAfterData,
    /// Read the whole message, then answer `454` (throttling, as Amazon SES does).
    ThrottleAfterData,
    /// `550` to RCPT TO, then never answer again on that connection.
    RefuseThenHang,
}

/// One accepted email.
#[derive(Clone, Debug)]
pub struct Received {
    pub to: Vec<String>,
    pub data: Vec<u8>,
    /// When the server accepted it.
    pub at: Instant,
}

impl Received {
    /// The body: the text and HTML parts, each decoded as its header says.
    pub fn text(&self) -> String {
        ["text/plain", "text/html"]
            .iter()
            .filter_map(|content_type| self.part(content_type))
            .map(|(body, _)| body)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The decoded body of the MIME part of this type (`text/plain`, `text/html`), and
    /// how it was transferred.
    pub fn part(&self, content_type: &str) -> Option<(String, String)> {
        let raw = String::from_utf8_lossy(&self.data).replace("\r\n", "\n");
        let boundary = self
            .header("Content-Type")?
            .split_once("boundary=")?
            .1
            .trim_matches('"')
            .to_owned();
        raw.split(&format!("--{boundary}")).find_map(|part| {
            let (head, body) = part.trim_start_matches('\n').split_once("\n\n")?;
            let header = |name: &str| {
                head.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    key.eq_ignore_ascii_case(name)
                        .then(|| value.trim().to_owned())
                })
            };
            if !header("Content-Type")?.starts_with(content_type) {
                return None;
            }
            let encoding = header("Content-Transfer-Encoding").unwrap_or_else(|| "7bit".into());
            let body = body.strip_suffix('\n').unwrap_or(body);
            let decoded = match encoding.as_str() {
                "quoted-printable" => decode_quoted_printable(body),
                _ => body.to_owned(),
            };
            Some((decoded, encoding))
        })
    }

    /// A header's value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let raw = String::from_utf8_lossy(&self.data).replace("\r\n", "\n");
        let head = raw
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .replace("\n ", " ")
            .replace("\n\t", " ");
        head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// The first URL in the message that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let text = self.text();
        let start = text.find(prefix)?;
        let link: String = text[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<' && *c != '>')
            .collect();
        Some(link)
    }
}

pub fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'='
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

type FaultPlan = Box<dyn FnMut(&str) -> Fault + Send>;

/// What one connection carried: the commands of each read that had any (a message's
/// data left out), how many reads ended a message's data and went on with the next
/// MAIL FROM, and how many messages it delivered.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLog {
    pub command_reads: Vec<String>,
    pub data_then_mail_reads: usize,
    pub messages: usize,
}

struct Shared {
    /// How long to wait before answering the end of each message.
    delay: Duration,
    /// Whether EHLO offers PIPELINING (RFC 2920).
    pipelining: bool,
    logs: Mutex<Vec<ConnectionLog>>,
    received: Mutex<Vec<Received>>,
    plan: Mutex<FaultPlan>,
    attempts: Mutex<HashMap<String, u32>>,
    connections: std::sync::atomic::AtomicUsize,
    arrived: Notify,
    /// Closes every connection waiting for its client's next command.
    close_idle: Notify,
}

pub struct SmtpServer {
    pub address: SocketAddr,
    shared: Arc<Shared>,
}

/// The per-connection state mailin calls back into.
struct Session {
    shared: Arc<Shared>,
    to: Vec<String>,
    data: Vec<u8>,
    /// The fault chosen at RCPT TO that strikes after the data.
    after_data: Arc<Mutex<Fault>>,
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, _from: &str) -> Response {
        self.to.clear();
        self.data.clear();
        *self.after_data.lock().unwrap() = Fault::Accept;
        mailin::response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        *self
            .shared
            .attempts
            .lock()
            .unwrap()
            .entry(to.to_owned())
            .or_default() += 1;
        let fault = (self.shared.plan.lock().unwrap())(to);
        match fault {
            Fault::TemporaryFailure => Response::custom(451, "4.3.0 Try again later".into()),
            Fault::PermanentFailure => Response::custom(550, "5.1.1 No such user".into()),
            Fault::RefuseThenHang => {
                *self.after_data.lock().unwrap() = fault;
                Response::custom(550, "5.1.1 No such user".into())
            }
            other => {
                *self.after_data.lock().unwrap() = other;
                self.to.push(to.to_owned());
                mailin::response::OK
            }
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        // Other faults are answered by serve_connection: mailin stays in its data state
        // after a refusal.
        if *self.after_data.lock().unwrap() == Fault::Accept {
            self.shared.received.lock().unwrap().push(Received {
                to: std::mem::take(&mut self.to),
                data: std::mem::take(&mut self.data),
                at: Instant::now(),
            });
            self.shared.arrived.notify_waiters();
        }
        mailin::response::OK
    }
}

impl SmtpServer {
    /// A server that accepts everything.
    pub async fn start() -> SmtpServer {
        SmtpServer::with_faults(|_| Fault::Accept).await
    }

    /// A server that asks `plan` what to do with each recipient attempt.
    pub async fn with_faults(plan: impl FnMut(&str) -> Fault + Send + 'static) -> SmtpServer {
        SmtpServer::launch(plan, Duration::ZERO, true).await
    }

    /// A server that does not offer PIPELINING, so clients send one command at a time.
    pub async fn without_pipelining(
        plan: impl FnMut(&str) -> Fault + Send + 'static,
    ) -> SmtpServer {
        SmtpServer::launch(plan, Duration::ZERO, false).await
    }

    /// A server that takes `delay` to accept each message, for fan-outs to interrupt.
    pub async fn with_delay(delay: Duration) -> SmtpServer {
        SmtpServer::launch(|_| Fault::Accept, delay, true).await
    }

    async fn launch(
        plan: impl FnMut(&str) -> Fault + Send + 'static,
        delay: Duration,
        pipelining: bool,
    ) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP server");
        let address = listener.local_addr().expect("its address");
        let shared = Arc::new(Shared {
            delay,
            pipelining,
            logs: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            plan: Mutex::new(Box::new(plan)),
            attempts: Mutex::new(HashMap::new()),
            connections: std::sync::atomic::AtomicUsize::new(0),
            arrived: Notify::new(),
            close_idle: Notify::new(),
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                accepting
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::spawn(serve_connection(stream, peer, accepting.clone()));
            }
        });
        SmtpServer { address, shared }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// How many emails each address was sent.
    pub fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for mail in self.shared.received.lock().unwrap().iter() {
            for to in &mail.to {
                *counts.entry(to.clone()).or_default() += 1;
            }
        }
        counts
    }

    pub fn received_by(&self, address: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|mail| mail.to.iter().any(|to| to == address))
            .collect()
    }

    /// What each connection carried, in the order they were opened.
    pub fn connection_logs(&self) -> Vec<ConnectionLog> {
        self.shared.logs.lock().unwrap().clone()
    }

    /// Closes every connection that waits for a command, as a server does when its
    /// idle timeout strikes.
    pub fn close_idle_connections(&self) {
        self.shared.close_idle.notify_waiters();
    }

    /// How many connections clients opened.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many times a recipient was tried, accepted or not.
    pub fn attempts(&self, address: &str) -> u32 {
        self.shared
            .attempts
            .lock()
            .unwrap()
            .get(address)
            .copied()
            .unwrap_or(0)
    }

    /// Waits until `count` different addresses have received email, or panics after `limit`.
    pub async fn wait_for_addresses(
        &self,
        count: usize,
        limit: Duration,
    ) -> HashMap<String, usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            let counts = self.counts();
            if counts.len() >= count {
                return counts;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{} of {count} addresses got email within {limit:?}",
                    self.counts().len()
                );
            }
        }
    }

    /// Waits until `count` emails were accepted in all, or panics after `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.shared.arrived.notified();
            if self.shared.received.lock().unwrap().len() >= count {
                return self.received();
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{} of {count} emails arrived within {limit:?}",
                    self.received().len()
                );
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let delay = shared.delay;
    let pipelining = shared.pipelining;
    let log = {
        let mut logs = shared.logs.lock().unwrap();
        logs.push(ConnectionLog::default());
        logs.len() - 1
    };
    let logs = shared.clone();
    let closing = shared.clone();
    let record =
        move |change: &dyn Fn(&mut ConnectionLog)| change(&mut logs.logs.lock().unwrap()[log]);
    let after_data = Arc::new(Mutex::new(Fault::Accept));
    let handler = Session {
        shared,
        to: Vec::new(),
        data: Vec::new(),
        after_data: after_data.clone(),
    };
    let mut session = SessionBuilder::new("runrate-test-smtp").build(peer.ip(), handler);
    let (mut reader, mut writer) = stream.into_split();
    let mut out = Vec::new();
    if session.greeting().write_to(&mut out).is_err() || writer.write_all(&out).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    let mut in_data = false;
    loop {
        let read = tokio::select! {
            read = reader.read(&mut chunk) => read,
            _ = closing.close_idle.notified() => return,
        };
        let read = match read {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        pending.extend_from_slice(&chunk[..read]);
        // The replies to pipelined commands go out together, as real servers send them.
        out.clear();
        let mut commands = String::new();
        let mut data_ended = false;
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let end_of_data = in_data && line == b".\r\n";
            if !in_data {
                let command = String::from_utf8_lossy(&line);
                if data_ended && command.starts_with("MAIL FROM") {
                    record(&|log| log.data_then_mail_reads += 1);
                    data_ended = false;
                }
                commands.push_str(&command);
            }
            data_ended |= end_of_data;
            if end_of_data && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let is_ehlo = !in_data && line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"EHLO");
            let mut response = session.process(&line);
            if end_of_data {
                in_data = false;
                let fault = *after_data.lock().unwrap();
                match fault {
                    Fault::DropAfterData => return,
                    Fault::HangAfterData => {
                        // Keep the connection open and say nothing until the client gives up.
                        let mut sink = Vec::new();
                        let _ = reader.read_to_end(&mut sink).await;
                        return;
                    }
                    Fault::Accept => record(&|log| log.messages += 1),
                    Fault::ThrottleAfterData => {
                        response =
                            Response::custom(454, "4.7.0 Throttling failure: slow down".into());
                    }
                    _ => {}
                }
            }
            if response.action == Action::NoReply {
                continue;
            }
            let reply_start = out.len();
            if response.write_to(&mut out).is_err() {
                return;
            }
            if response.code == 354 {
                in_data = true;
            }
            if is_ehlo && pipelining && response.code == 250 {
                // mailin does not offer PIPELINING; it handles pipelined commands all
                // the same, since each line is answered in order.
                let first_line_end = out[reply_start..]
                    .iter()
                    .position(|&byte| byte == b'\n')
                    .map_or(reply_start, |at| reply_start + at + 1);
                out.splice(
                    first_line_end..first_line_end,
                    b"250-PIPELINING\r\n".iter().copied(),
                );
            }
            if response.action == Action::Close {
                let _ = writer.write_all(&out).await;
                return;
            }
        }
        if !commands.is_empty() {
            record(&|log| log.command_reads.push(commands.clone()));
        }
        if !out.is_empty() && writer.write_all(&out).await.is_err() {
            return;
        }
        if *after_data.lock().unwrap() == Fault::RefuseThenHang {
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink).await;
            return;
        }
    }
}
