-- Webhook endpoints, and deliveries to them through the same outbox as email: a
-- delivery goes to a subscriber or to an endpoint, never both. SQLite cannot drop a NOT
-- NULL constraint, so the deliveries table is rebuilt with the same rows and indexes.
CREATE TABLE webhook_endpoints (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,
    -- The HMAC key of the signatures: kept as given, since every POST is signed with it;
    -- never returned or logged after the call that registered it.
    secret TEXT NOT NULL,
    created_at_us INTEGER NOT NULL,
    -- NULL while the endpoint is registered.
    deleted_at_us INTEGER
);

CREATE TABLE deliveries_with_endpoints (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    load_id INTEGER REFERENCES loads (id),
    subscriber_id INTEGER REFERENCES subscribers (id),
    -- Where it goes, as queued: an email address, or `webhooks/{id}` (never the URL,
    -- which may carry a credential of the receiver's).
    email TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at_us INTEGER NOT NULL,
    last_error TEXT,
    sent_at_us INTEGER,
    created_at_us INTEGER NOT NULL,
    claim_token INTEGER,
    channel TEXT NOT NULL DEFAULT 'email',
    priority INTEGER NOT NULL DEFAULT 1,
    endpoint_id INTEGER REFERENCES webhook_endpoints (id),
    CHECK ((subscriber_id IS NULL) <> (endpoint_id IS NULL))
);

INSERT INTO deliveries_with_endpoints (id, kind, load_id, subscriber_id, email, state, attempts,
    next_attempt_at_us, last_error, sent_at_us, created_at_us, claim_token, channel, priority)
SELECT id, kind, load_id, subscriber_id, email, state, attempts, next_attempt_at_us, last_error,
    sent_at_us, created_at_us, claim_token, channel, priority
FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_with_endpoints RENAME TO deliveries;

CREATE INDEX deliveries_due ON deliveries (priority, next_attempt_at_us, id)
    WHERE state IN ('pending', 'sending', 'retrying');
CREATE INDEX deliveries_by_load ON deliveries (load_id, state);
CREATE INDEX deliveries_sent ON deliveries (sent_at_us) WHERE sent_at_us IS NOT NULL;
