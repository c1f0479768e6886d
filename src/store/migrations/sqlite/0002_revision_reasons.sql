-- Why a revision replaced the one before it (restated, corrected, estimate-replaced);
-- NULL for a fact's first revision.
ALTER TABLE fact_revisions ADD COLUMN reason TEXT;
