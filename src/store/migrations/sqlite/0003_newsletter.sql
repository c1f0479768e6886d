-- Newsletter subscribers, their tokens, and the transactional outbox of emails.

CREATE TABLE subscribers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    -- pending, confirmed, unsubscribed, bounced, complained
    state TEXT NOT NULL,
    language TEXT NOT NULL,
    -- 1: every provider; 0: only those in subscriber_providers
    follows_all INTEGER NOT NULL,
    created_at_us INTEGER NOT NULL,
    updated_at_us INTEGER NOT NULL,
    -- When the last confirmation email was queued, to send at most one per window.
    confirmation_queued_at_us INTEGER
);

CREATE INDEX subscribers_by_state ON subscribers (state, id);

CREATE TABLE subscriber_providers (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    provider_id TEXT NOT NULL,
    PRIMARY KEY (subscriber_id, provider_id)
);

-- Only digests: a token itself exists only in the email that carries it.
CREATE TABLE subscription_tokens (
    digest TEXT PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    -- confirm or unsubscribe
    purpose TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    -- NULL: never expires
    expires_at_us INTEGER
);

CREATE INDEX subscription_tokens_by_subscriber ON subscription_tokens (subscriber_id, purpose);

-- One row per load that notified subscribers; the audience was frozen when it was written.
CREATE TABLE notifications (
    load_id INTEGER PRIMARY KEY REFERENCES loads (id),
    created_at_us INTEGER NOT NULL,
    recipients INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id INTEGER PRIMARY KEY,
    -- confirmation or update
    kind TEXT NOT NULL,
    -- The load an update is about; NULL for confirmations.
    load_id INTEGER REFERENCES loads (id),
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    email TEXT NOT NULL,
    -- pending, sending, retrying, sent, failed, skipped
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    -- When the row may next be claimed: due time, or the end of a claim's lease.
    next_attempt_at_us INTEGER NOT NULL,
    last_error TEXT,
    sent_at_us INTEGER,
    created_at_us INTEGER NOT NULL
);

-- Claiming scans only unfinished rows.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at_us, id)
    WHERE state IN ('pending', 'sending', 'retrying');

CREATE INDEX deliveries_by_load ON deliveries (load_id, state);
