-- Fencing: the highest lock token that claimed a message after taking it over from
-- a worker that was gone or whose lease lapsed. A write carrying a lower token is
-- refused, so a worker paused past its lease can never commit after its successor
-- took over. Rows appear only on takeovers, which are rare.
CREATE TABLE IF NOT EXISTS fences (
    fingerprint  text PRIMARY KEY,
    token        bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
