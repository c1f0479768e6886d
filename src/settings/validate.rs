//! The checks that span keys or need more than a type: each failure names its key and
//! the form expected.

use std::str::FromStr;

use super::{DATABASE_FILE, MIN_ADMIN_TOKEN_LEN, MailTransport, Settings, SettingsError};

impl Settings {
    /// TLS needs both files of a listener, or neither.
    fn validate_tls(&self) -> Result<(), SettingsError> {
        for (section, certificate, key) in [
            ("grpc", &self.grpc.tls_certificate, &self.grpc.tls_key),
            ("http", &self.http.tls_certificate, &self.http.tls_key),
        ] {
            if certificate.as_os_str().is_empty() != key.as_os_str().is_empty() {
                return Err(SettingsError(format!(
                    "`{section}.tls_certificate` and `{section}.tls_key` go together (set both for TLS, or neither)"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        self.validate_tls()?;
        let fail = |key: &str, expected: &str| {
            Err(SettingsError(format!(
                "`{key}` is not valid (expected {expected})"
            )))
        };
        if self.grpc.max_concurrent_streams == 0 {
            return fail("grpc.max_concurrent_streams", "at least 1");
        }
        if self.load.max_file_bytes == 0 {
            return fail("load.max_file_bytes", "at least 1 byte");
        }
        if self.watch.heartbeat_interval.0.is_zero() {
            return fail(
                "watch.heartbeat_interval",
                "a duration above zero, such as 15s",
            );
        }
        if self.watch.resume_history_loads == 0 {
            return fail("watch.resume_history_loads", "at least 1");
        }
        if self.newsletter.subscribe_rate_limit == 0 {
            return fail("newsletter.subscribe_rate_limit", "at least 1");
        }
        for (key, value) in [
            (
                "newsletter.confirmation_ttl",
                self.newsletter.confirmation_ttl,
            ),
            (
                "newsletter.subscribe_rate_window",
                self.newsletter.subscribe_rate_window,
            ),
            ("mail.smtp.connect_timeout", self.mail.smtp.connect_timeout),
            ("mail.smtp.send_timeout", self.mail.smtp.send_timeout),
            (
                "mail.smtp.max_connection_age",
                self.mail.smtp.max_connection_age,
            ),
            ("delivery.retry_base", self.delivery.retry_base),
            ("delivery.retry_max", self.delivery.retry_max),
            ("delivery.lease", self.delivery.lease),
            ("delivery.poll_interval", self.delivery.poll_interval),
            ("delivery.quota_window", self.delivery.quota_window),
            ("webhook.timeout", self.webhook.timeout),
            ("database.refresh_interval", self.database.refresh_interval),
            ("grpc.handshake_timeout", self.grpc.handshake_timeout),
            ("grpc.keepalive_interval", self.grpc.keepalive_interval),
            ("grpc.keepalive_timeout", self.grpc.keepalive_timeout),
            ("grpc.max_connection_age", self.grpc.max_connection_age),
            ("http.header_read_timeout", self.http.header_read_timeout),
            ("http.idle_timeout", self.http.idle_timeout),
            (
                "database.health_check_interval",
                self.database.health_check_interval,
            ),
        ] {
            if value.0.is_zero() {
                return fail(key, "a duration above zero");
            }
        }
        for (key, value) in [
            ("mail.smtp.pool_size", self.mail.smtp.pool_size),
            (
                "mail.smtp.max_messages_per_connection",
                self.mail.smtp.max_messages_per_connection,
            ),
            ("delivery.concurrency", self.delivery.concurrency),
            ("delivery.batch_size", self.delivery.batch_size),
            ("delivery.max_unrecorded", self.delivery.max_unrecorded),
            ("delivery.max_attempts", self.delivery.max_attempts),
            ("database.max_connections", self.database.max_connections),
        ] {
            if value == 0 {
                return fail(key, "at least 1");
            }
        }
        for (key, value) in [
            ("watch.max_streams", self.watch.max_streams),
            (
                "watch.max_streams_per_connection",
                self.watch.max_streams_per_connection,
            ),
        ] {
            if value == 0 {
                return fail(key, "at least 1");
            }
        }
        if !is_http_url(&self.http.public_base_url) {
            return fail("http.public_base_url", "an http:// or https:// URL");
        }
        if lettre::message::Mailbox::from_str(&self.mail.from).is_err() {
            return fail(
                "mail.from",
                "an address such as `runrate <newsletter@example.com>`",
            );
        }
        if !self.mail.unsubscribe_mailto.is_empty()
            && lettre::Address::from_str(&self.mail.unsubscribe_mailto).is_err()
        {
            return fail("mail.unsubscribe_mailto", "an email address, or empty");
        }
        if self.mail.transport == MailTransport::Smtp && self.mail.smtp.host.trim().is_empty() {
            return fail("mail.smtp.host", "a host name when mail.transport is smtp");
        }
        let otlp = self.tracing.otlp_endpoint.trim();
        if !(otlp.is_empty() || is_http_url(otlp)) {
            return fail(
                "tracing.otlp_endpoint",
                "an http:// or https:// URL such as http://127.0.0.1:4317, or empty",
            );
        }
        if !(0.0..=1.0).contains(&self.tracing.sample_ratio) {
            return fail("tracing.sample_ratio", "a number from 0 to 1");
        }
        let token = self.admin.token.expose();
        if !token.is_empty()
            && (token.len() < MIN_ADMIN_TOKEN_LEN || token.chars().any(|c| !c.is_ascii_graphic()))
        {
            return fail(
                "admin.token",
                &format!(
                    "at least {MIN_ADMIN_TOKEN_LEN} printable ASCII characters without spaces, or empty to have one generated"
                ),
            );
        }
        let url = self.database.url.expose();
        let supported = ["sqlite:", "postgres://", "postgresql://"];
        if !url.is_empty() && !supported.iter().any(|scheme| url.starts_with(scheme)) {
            return Err(SettingsError(format!(
                "`database.url` is not supported (expected sqlite://PATH or postgres://USER:PASSWORD@HOST/DATABASE, or empty for {DATABASE_FILE} in the data directory)"
            )));
        }
        Ok(())
    }
}

fn is_http_url(text: &str) -> bool {
    text.starts_with("http://") || text.starts_with("https://")
}
