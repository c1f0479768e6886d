//! The outbox's channel seam: a channel written here, in the test suite, gets its copy of
//! every update through the same claim → prepare → send → record path as email, with
//! retries and suppression decided by the outbox, not by the channel.

use std::{
    sync::{Arc, Mutex},
    time::SystemTime,
};

use async_trait::async_trait;
use runrate::{
    api::{ListSubscribersRequest, SubscriberState},
    domain::delivery::{ClaimedDelivery, DeliveryKind},
    outbox::{Channel, Readiness, SendFailure},
    store::StoreError,
};

use crate::support::helpers::TestServer;

/// What the test channel does with a message to one address.
#[derive(Clone, Copy)]
enum Answer {
    Take,
    /// Refuse the first `n` attempts for a passing reason.
    FailFirst(u32),
    /// Refuse for good, and ask for the recipient to be suppressed.
    Refuse,
}

/// A channel that keeps what it is given: each (address, kind) it took.
struct RecordingChannel {
    answers: Vec<(&'static str, Answer)>,
    attempts: Mutex<Vec<String>>,
    taken: Mutex<Vec<(String, DeliveryKind)>>,
}

impl RecordingChannel {
    fn new(answers: Vec<(&'static str, Answer)>) -> Arc<Self> {
        Arc::new(RecordingChannel {
            answers,
            attempts: Mutex::new(Vec::new()),
            taken: Mutex::new(Vec::new()),
        })
    }

    fn taken(&self) -> Vec<(String, DeliveryKind)> {
        let mut taken = self.taken.lock().unwrap().clone();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    fn attempts(&self, address: &str) -> usize {
        let attempts = self.attempts.lock().unwrap();
        attempts.iter().filter(|a| *a == address).count()
    }
}

#[async_trait]
impl Channel for RecordingChannel {
    fn name(&self) -> &'static str {
        "test-record"
    }

    async fn prepare(
        &self,
        batch: &[ClaimedDelivery],
        _now: SystemTime,
    ) -> Result<Vec<Readiness>, StoreError> {
        Ok(batch
            .iter()
            .map(|delivery| Readiness::Ready(format!("for {}", delivery.address)))
            .collect())
    }

    async fn send(&self, delivery: &ClaimedDelivery, prepared: &str) -> Result<(), SendFailure> {
        assert_eq!(prepared, format!("for {}", delivery.address));
        self.attempts.lock().unwrap().push(delivery.address.clone());
        let answer = self
            .answers
            .iter()
            .find(|(address, _)| *address == delivery.address)
            .map_or(Answer::Take, |(_, answer)| *answer);
        match answer {
            Answer::FailFirst(n) if self.attempts(&delivery.address) <= n as usize => {
                Err(SendFailure::Transient("the receiver is busy".into()))
            }
            Answer::Refuse => Err(SendFailure::Refused {
                reason: "no such receiver".into(),
                suppress: true,
            }),
            Answer::Take | Answer::FailFirst(_) => {
                self.taken
                    .lock()
                    .unwrap()
                    .push((delivery.address.clone(), delivery.kind));
                Ok(())
            }
        }
    }
}

async fn report(server: &TestServer) -> runrate::api::DeliveryReport {
    server.delivery_report("loads/2").await
}

#[tokio::test]
async fn a_channel_added_beside_email_gets_one_copy_of_each_update_per_recipient() {
    let channel = RecordingChannel::new(Vec::new());
    let server = TestServer::start_with_channel(channel.clone()).await;
    server.seed_confirmed_subscribers(3).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;

    let expected: Vec<(String, DeliveryKind)> = (1..=3)
        .map(|n| (format!("reader{n}@example.com"), DeliveryKind::Update(2)))
        .collect();
    assert_eq!(channel.taken(), expected);
    // Email got its copies too: three updates written as files.
    let emails = std::fs::read_dir(server.data_dir.join("mail"))
        .expect("the mail directory")
        .count();
    assert_eq!(emails, 3);
    let report = report(&server).await;
    assert_eq!((report.recipients, report.sent), (6, 6));
}

#[tokio::test]
async fn a_channel_s_failures_are_retried_or_suppress_as_the_outbox_decides() {
    let channel = RecordingChannel::new(vec![
        ("reader1@example.com", Answer::FailFirst(2)),
        ("reader2@example.com", Answer::Refuse),
    ]);
    let server = TestServer::start_with_channel(channel.clone()).await;
    server.seed_confirmed_subscribers(3).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;

    assert_eq!(channel.attempts("reader1@example.com"), 3, "two retries");
    assert_eq!(channel.attempts("reader2@example.com"), 1, "no retry");
    let taken: Vec<String> = channel.taken().into_iter().map(|(a, _)| a).collect();
    assert_eq!(taken, ["reader1@example.com", "reader3@example.com"]);
    let report = report(&server).await;
    assert_eq!((report.sent, report.failed), (5, 1));
    assert!(
        report.failures[0].last_error.contains("no such receiver"),
        "{:?}",
        report.failures
    );

    let subscribers = server
        .admin()
        .await
        .list_subscribers(server.admin_request(ListSubscribersRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .subscribers;
    let refused = subscribers
        .iter()
        .find(|s| s.email == "reader2@example.com")
        .expect("reader2");
    assert_eq!(refused.state(), SubscriberState::Bounced);
}
