-- Claiming order: transactional messages (priority 0, confirmations) before update
-- fan-outs (priority 1), then by due time. The index leads with the priority so a claim
-- reads the first due rows of the lowest priority without sorting a fan-out's backlog.
ALTER TABLE deliveries ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
UPDATE deliveries SET priority = 0 WHERE kind = 'confirmation';
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (priority, next_attempt_at_us, id)
    WHERE state IN ('pending', 'sending', 'retrying');
