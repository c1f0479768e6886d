-- The channel that delivers each message: `email` for every row so far.
ALTER TABLE deliveries ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
