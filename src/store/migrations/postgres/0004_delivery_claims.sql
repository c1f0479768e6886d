-- Fenced claims: each claim of a batch of deliveries writes a fresh random token, and a
-- worker renews, records and releases only rows that still carry its token. A worker
-- whose lease ran out (a pause, a lost database) can no longer record over the worker
-- that claimed the rows after it.
ALTER TABLE deliveries ADD COLUMN claim_token BIGINT;

CREATE INDEX deliveries_by_claim ON deliveries (claim_token) WHERE state = 'sending';
