//! A batch of emails on one SMTP connection: with PIPELINING each message's content goes
//! out in the same write as the next message's commands, as Postfix sends them, so a
//! fan-out costs one round trip per email.

// The transaction, its commands and how replies are classified are the parent's.
use super::*;

/// A lane's emails over one connection at a time. With `lookahead` and a server that
/// offers PIPELINING, an email's content is held back until the next email is handed
/// over, then goes out in one write with that email's MAIL, RCPT and DATA (RFC 2920
/// lets message content lead a group, as Postfix sends it): one round trip per email
/// in a steady fan-out instead of two.
pub(super) struct SmtpBatch<'a> {
    mailer: &'a SmtpMailer,
    lookahead: bool,
    session: Option<Session>,
    /// Whether the session came from the pool and has carried nothing since, so that
    /// a failure to write to it may just mean the server closed it while idle.
    untried_reuse: bool,
    /// The email whose data phase is open, with its content, waiting for the next one.
    open: Option<(usize, OutgoingEmail, String)>,
}

impl<'a> SmtpBatch<'a> {
    pub(super) fn new(mailer: &'a SmtpMailer, lookahead: bool) -> Self {
        SmtpBatch {
            mailer,
            lookahead,
            session: None,
            untried_reuse: false,
            open: None,
        }
    }

    /// The batch's session, checked out if it has none; one at its caps is retired
    /// first (after the content held open on it goes out).
    async fn ensure_session(&mut self, outcomes: &mut Vec<Outcome>) -> Result<(), SendError> {
        if let Some(session) = &self.session {
            let carrying = u32::from(self.open.is_some());
            if !self.mailer.has_room(session, carrying) {
                outcomes.extend(self.deliver_open().await);
                if let Some(session) = self.session.take() {
                    self.mailer.retire(session).await;
                }
            }
        }
        if self.session.is_none() {
            let (session, reused) = self.mailer.checkout().await?;
            self.session = Some(session);
            self.untried_reuse = reused;
        }
        Ok(())
    }

    /// One email's whole transaction now, on the batch's session or a new one; the
    /// outcome of content held open on a retired session goes to `outcomes`.
    pub(super) async fn send_now(
        &mut self,
        email: &OutgoingEmail,
        outcomes: &mut Vec<Outcome>,
    ) -> Result<(), SendError> {
        let timeout = self.mailer.send_timeout;
        self.ensure_session(outcomes).await?;
        let Some(session) = self.session.as_mut() else {
            return Err(self.mailer.no_answer());
        };
        let mut outcome = tokio::time::timeout(timeout, transact(session, email)).await;
        // An idle connection the server has since closed fails before any reply: open a
        // fresh one and try once more.
        if self.untried_reuse
            && matches!(&outcome, Ok(Err((Step::MailFrom, err))) if err.status().is_none())
        {
            self.session = None;
            let session = self.session.insert(self.mailer.connect().await?);
            outcome = tokio::time::timeout(timeout, transact(session, email)).await;
        }
        self.untried_reuse = false;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err((step, err))) => {
                self.after_failure(&err).await;
                Err(classify(step, &err))
            }
            Err(_) => {
                self.drop_session().await;
                Err(self.mailer.no_answer())
            }
        }
    }

    /// Sends the content held open, if any, and reads its reply.
    async fn deliver_open(&mut self) -> Option<Outcome> {
        let (key, email, content) = self.open.take()?;
        let exchanged = match self.session.as_mut() {
            Some(session) => {
                let exchange = exchange(session, Some(&content), None);
                tokio::time::timeout(self.mailer.send_timeout, exchange).await
            }
            None => Ok((None, None)),
        };
        let result = match exchanged {
            Ok((Some(reply), _)) => self.content_result(reply).await,
            Ok((None, _)) | Err(_) => {
                self.drop_session().await;
                Err(self.mailer.no_answer())
            }
        };
        Some(Outcome { key, email, result })
    }

    /// What a reply to message content means for the email and the session.
    async fn content_result(&mut self, reply: Result<(), SmtpError>) -> Result<(), SendError> {
        match reply {
            Ok(()) => {
                if let Some(session) = &mut self.session {
                    session.messages += 1;
                }
                Ok(())
            }
            Err(err) => {
                if err.status().is_none() {
                    self.drop_session().await;
                }
                Err(classify(Step::Data, &err))
            }
        }
    }

    /// After a refused or failed transaction: RSET when the server answered, else the
    /// connection is closed.
    async fn after_failure(&mut self, err: &SmtpError) {
        let Some(session) = self.session.take() else {
            return;
        };
        if err.status().is_some() {
            self.session = self.mailer.recover(session).await;
        } else {
            SmtpMailer::abort(session).await;
        }
    }

    async fn drop_session(&mut self) {
        if let Some(session) = self.session.take() {
            SmtpMailer::abort(session).await;
        }
    }

    /// Returns the session to the pool, or closes it if it has done its share.
    pub(super) async fn finish_session(&mut self) {
        if let Some(session) = self.session.take() {
            self.mailer.checkin(session).await;
        }
    }
}

#[async_trait]
impl MailBatch for SmtpBatch<'_> {
    async fn send(&mut self, key: usize, email: OutgoingEmail) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        if let Err(err) = self.ensure_session(&mut outcomes).await {
            outcomes.push(Outcome {
                key,
                email,
                result: Err(err),
            });
            return outcomes;
        }
        let pipelining = self
            .session
            .as_ref()
            .is_some_and(|session| session.abilities.pipelining);
        let block = (self.lookahead && pipelining)
            .then(|| data_block(&email.bytes))
            .flatten();
        let Some(block) = block else {
            outcomes.extend(self.deliver_open().await);
            let result = self.send_now(&email, &mut outcomes).await;
            outcomes.push(Outcome { key, email, result });
            return outcomes;
        };
        let held = self.open.take();
        let Some(session) = self.session.as_mut() else {
            outcomes.push(Outcome {
                key,
                email,
                result: Err(self.mailer.no_answer()),
            });
            return outcomes;
        };
        let content = held.as_ref().map(|(_, _, content)| content.as_str());
        let exchanged = tokio::time::timeout(
            self.mailer.send_timeout,
            exchange(session, content, Some(&email)),
        )
        .await;
        let Ok((content_reply, envelope)) = exchanged else {
            // Nothing is known of either: both are tried again later.
            self.drop_session().await;
            if let Some((held_key, held_email, _)) = held {
                outcomes.push(Outcome {
                    key: held_key,
                    email: held_email,
                    result: Err(self.mailer.no_answer()),
                });
            }
            outcomes.push(Outcome {
                key,
                email,
                result: Err(self.mailer.no_answer()),
            });
            return outcomes;
        };
        if let Some((held_key, held_email, _)) = held {
            let result = match content_reply {
                Some(reply) => self.content_result(reply).await,
                None => Err(self.mailer.no_answer()),
            };
            outcomes.push(Outcome {
                key: held_key,
                email: held_email,
                result,
            });
        }
        match envelope {
            Some(Ok(())) if self.session.is_some() => {
                self.untried_reuse = false;
                self.open = Some((key, email, block));
            }
            Some(Err((Step::MailFrom, err))) if self.untried_reuse && err.status().is_none() => {
                // The pooled connection was closed while idle: once more, on a new one.
                self.untried_reuse = false;
                self.session = None;
                outcomes.extend(self.send(key, email).await);
            }
            Some(Err((step, err))) => {
                self.after_failure(&err).await;
                outcomes.push(Outcome {
                    key,
                    email,
                    result: Err(classify(step, &err)),
                });
            }
            Some(Ok(())) | None => outcomes.push(Outcome {
                key,
                email,
                result: Err(self.mailer.no_answer()),
            }),
        }
        outcomes
    }

    async fn finish(&mut self) -> Vec<Outcome> {
        let outcomes = self.deliver_open().await.into_iter().collect();
        self.finish_session().await;
        outcomes
    }
}
