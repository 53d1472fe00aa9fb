-- The table both sinks write; PostgreSQL and SQLite alike. `make demo` creates it before the
-- workers start; the sinks also run this (IF NOT EXISTS) so they work on any empty database.
CREATE TABLE IF NOT EXISTS review_results (
    request NUMERIC(20) PRIMARY KEY,   -- a u64 request id
    verdict TEXT NOT NULL,             -- 'positive' or 'negative'
    words INTEGER NOT NULL,
    finished_at DOUBLE PRECISION NOT NULL  -- Unix time the row was written (the demo's latency)
)
