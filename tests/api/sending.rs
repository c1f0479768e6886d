//! Sending the way mail providers expect: pipelined commands where the server offers
//! PIPELINING and one at a time where it does not, refusals inside a pipelined group
//! that fail only their own delivery, connections retired at their message cap, a
//! send-rate limit, throttling replies that slow the sender down instead of failing
//! deliveries, and a quota that holds deliveries back without failing them.

use std::time::{Duration, Instant};

use runrate::settings::{Settings, TextDuration};

use crate::support::{
    helpers::{TestDir, TestServer},
    smtp_server::{Fault, SmtpServer},
};

/// A server mailing through `smtp` with one lane of `settings`, `subscribers` confirmed
/// subscribers and the Q2 example loaded, its outbox worked until nothing is left.
async fn server_after_fan_out(
    smtp: &SmtpServer,
    subscribers: u32,
    adjust: impl FnOnce(&mut Settings),
) -> TestServer {
    let dir = TestDir::new().await;
    let mut settings = dir.smtp_settings(smtp.address);
    adjust(&mut settings);
    let server = TestServer::start_in(dir, settings).await;
    server.seed_confirmed_subscribers(subscribers).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.settle_outbox().await;
    server
}

/// The delivery report of such a fan-out.
async fn fan_out_through(
    smtp: &SmtpServer,
    subscribers: u32,
    adjust: impl FnOnce(&mut Settings),
) -> runrate::api::DeliveryReport {
    let server = server_after_fan_out(smtp, subscribers, adjust).await;
    server.delivery_report("loads/2").await
}

/// A server that answers `fault` for `address` and accepts everyone else.
async fn refusing(address: &'static str, fault: Fault) -> SmtpServer {
    SmtpServer::with_faults(move |to| if to == address { fault } else { Fault::Accept }).await
}

/// The most emails the server accepted within any one second.
pub fn busiest_second(smtp: &SmtpServer) -> usize {
    let mut arrivals: Vec<Instant> = smtp.received().iter().map(|mail| mail.at).collect();
    arrivals.sort();
    let mut busiest = 0;
    let mut first = 0;
    for (last, &at) in arrivals.iter().enumerate() {
        while at.duration_since(arrivals[first]) >= Duration::from_secs(1) {
            first += 1;
        }
        busiest = busiest.max(last + 1 - first);
    }
    busiest
}

/// The reads of all connections that carry a MAIL FROM.
fn transaction_reads(smtp: &SmtpServer) -> Vec<String> {
    smtp.connection_logs()
        .into_iter()
        .flat_map(|log| log.command_reads)
        .filter(|read| read.contains("MAIL FROM"))
        .collect()
}

#[tokio::test]
async fn with_pipelining_mail_rcpt_and_data_arrive_in_one_read_after_the_last_message() {
    let smtp = SmtpServer::start().await;
    let report = fan_out_through(&smtp, 5, |_| {}).await;
    assert_eq!(report.sent, 5);
    let reads = transaction_reads(&smtp);
    assert_eq!(reads.len(), 5, "{reads:?}");
    for read in reads {
        let commands: Vec<&str> = read.split_terminator("\r\n").collect();
        assert_eq!(commands.len(), 3, "{read:?}");
        assert!(commands[0].starts_with("MAIL FROM:<"), "{read:?}");
        assert!(commands[1].starts_with("RCPT TO:<reader"), "{read:?}");
        assert_eq!(commands[2], "DATA");
    }
    // Each message's data went out with the next message's commands, not a round trip
    // before them.
    let logs = smtp.connection_logs();
    let data_then_mail: usize = logs.iter().map(|log| log.data_then_mail_reads).sum();
    assert_eq!(data_then_mail, 4, "{logs:?}");
}

#[tokio::test]
async fn without_pipelining_each_command_waits_for_its_reply() {
    let smtp = SmtpServer::without_pipelining(|_| Fault::Accept).await;
    let report = fan_out_through(&smtp, 3, |_| {}).await;
    assert_eq!(report.sent, 3);
    let reads: Vec<String> = smtp
        .connection_logs()
        .into_iter()
        .flat_map(|log| log.command_reads)
        .collect();
    for read in &reads {
        assert_eq!(
            read.matches("\r\n").count(),
            1,
            "one command per read: {read:?}"
        );
    }
    for command in ["MAIL FROM", "RCPT TO", "DATA\r\n"] {
        assert_eq!(
            reads
                .iter()
                .filter(|read| read.starts_with(command))
                .count(),
            3,
            "{command}: {reads:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_recipient_in_a_pipelined_group_fails_only_its_delivery() {
    let smtp = refusing("reader3@example.com", Fault::PermanentFailure).await;
    let report = fan_out_through(&smtp, 6, |settings| {
        settings.delivery.concurrency = 1;
    })
    .await;
    assert_eq!((report.sent, report.failed), (5, 1), "{report:?}");
    assert_eq!(report.failures[0].email, "reader3@example.com");
    assert!(report.failures[0].last_error.contains("550"), "{report:?}");
    assert_eq!(smtp.attempts("reader3@example.com"), 1);
    // The refusal cost no connection: the next message went out on the same one.
    assert_eq!(smtp.connections(), 1);
    assert_eq!(smtp.received().len(), 5);
}

#[tokio::test]
async fn a_server_that_goes_silent_after_a_refusal_costs_its_connection_not_the_fan_out() {
    let smtp = refusing("reader2@example.com", Fault::RefuseThenHang).await;
    // Without a bound on the RSET after the refusal, this would wait for ever.
    let report = fan_out_through(&smtp, 4, |settings| {
        settings.delivery.concurrency = 1;
    })
    .await;
    assert_eq!((report.sent, report.failed), (3, 1), "{report:?}");
    assert_eq!(report.failures[0].email, "reader2@example.com");
    assert_eq!(smtp.attempts("reader2@example.com"), 1);
    // The silent connection was given up and a new one carried the rest.
    assert_eq!(smtp.connections(), 2);
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_while_idle_is_replaced_without_a_failed_attempt() {
    let smtp = SmtpServer::start().await;
    let server = server_after_fan_out(&smtp, 3, |settings| {
        settings.delivery.concurrency = 1;
    })
    .await;
    assert_eq!(smtp.received().len(), 3);
    smtp.close_idle_connections();

    server
        .load_example("2026-q1-restatement-example.toml")
        .await
        .expect("load");
    // Worked once at the wall clock's time: a failed attempt would wait for its retry.
    server.outbox.drain().await.expect("drain");
    let report = server.delivery_report("loads/3").await;
    assert_eq!((report.sent, report.retrying), (3, 0), "{report:?}");
    assert_eq!(smtp.received().len(), 6);
    assert_eq!(smtp.connections(), 2, "the closed one was replaced once");
}

#[tokio::test]
async fn no_connection_carries_more_messages_than_its_cap() {
    let smtp = SmtpServer::start().await;
    let report = fan_out_through(&smtp, 10, |settings| {
        settings.mail.smtp.max_messages_per_connection = 3;
    })
    .await;
    assert_eq!(report.sent, 10);
    let carried: Vec<usize> = smtp
        .connection_logs()
        .iter()
        .map(|log| log.messages)
        .collect();
    assert_eq!(carried.iter().sum::<usize>(), 10, "{carried:?}");
    assert!(carried.iter().all(|&messages| messages <= 3), "{carried:?}");
    assert_eq!(carried.len(), 4, "{carried:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_rate_14_no_second_sees_more_than_15_emails() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut settings = dir.smtp_settings(smtp.address);
    settings.delivery.max_rate = 14;
    let server = TestServer::start_in_with_lanes(dir, settings).await;
    server.seed_confirmed_subscribers(42).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    smtp.wait_for(42, Duration::from_secs(30)).await;
    let busiest = busiest_second(&smtp);
    assert!(busiest <= 15, "{busiest} emails within one second");
    // At 14 a second, 42 emails take about three seconds; unpaced they take a few ms.
    assert!(
        busiest >= 10,
        "{busiest}: the limit should not starve the sender"
    );
}

#[tokio::test]
async fn a_server_throttling_30_percent_of_messages_gets_every_one_in_the_end() {
    let mut messages = 0;
    let smtp = SmtpServer::with_faults(move |_| {
        messages += 1;
        if messages % 10 < 3 {
            Fault::ThrottleAfterData
        } else {
            Fault::Accept
        }
    })
    .await;
    let report = fan_out_through(&smtp, 40, |settings| {
        // Any throttle counted as a failed attempt would fail deliveries quickly.
        settings.delivery.max_attempts = 2;
    })
    .await;
    assert_eq!((report.sent, report.failed), (40, 0), "{report:?}");
    let tried: u32 = (1..=40)
        .map(|n| smtp.attempts(&format!("reader{n}@example.com")))
        .sum();
    assert!(
        tried >= 52,
        "{tried} tries: the server should have throttled about 30% of them"
    );
    assert_eq!(smtp.received().len(), 40);
}

#[tokio::test]
async fn a_spent_quota_holds_deliveries_back_without_failing_or_counting_them() {
    let smtp = SmtpServer::start().await;
    let dir = TestDir::new().await;
    let mut settings = dir.smtp_settings(smtp.address);
    settings.delivery.quota = 3;
    settings.delivery.quota_window = TextDuration(Duration::from_secs(3600));
    let server = TestServer::start_in(dir, settings).await;
    server.seed_confirmed_subscribers(5).await;
    server
        .load_example("2026-q2-example.toml")
        .await
        .expect("load");
    server.outbox.drain().await.expect("drain");
    assert_eq!(smtp.received().len(), 3);
    let report = server.delivery_report("loads/2").await;
    assert_eq!(
        (report.sent, report.pending, report.failed),
        (3, 2, 0),
        "{report:?}"
    );
    // Held back for when the first email leaves the window, an hour on.
    let due = server
        .store
        .next_delivery_due()
        .await
        .expect("next due")
        .expect("something is due");
    let wait = due
        .duration_since(std::time::SystemTime::now())
        .expect("due later");
    assert!(wait > Duration::from_secs(3500), "{wait:?}");
}
