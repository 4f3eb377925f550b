-- Burst coalescing (issue 15, CONTRACT §3): a message of a burst is answered by
-- the one reply to the burst's last message. On its inbound row, burst_reply is
-- NULL for a message answered by its own reply (every message before this
-- migration), '' for a coalesced message whose burst's reply is not yet
-- committed, and the fingerprint of the message whose reply answered it once it
-- is. The reply's `answers` (CONTRACT §4) are the rows naming it, oldest first.
-- A new nullable column without a default is a catalog change; the partial
-- indexes are empty at first (no row is pending or answered by another yet).
SET LOCAL lock_timeout = '10s';
ALTER TABLE messages ADD COLUMN IF NOT EXISTS burst_reply text;
CREATE INDEX IF NOT EXISTS messages_burst_pending ON messages (conversation_id, created_at, id)
    WHERE burst_reply = '';
CREATE INDEX IF NOT EXISTS messages_burst_answered ON messages (burst_reply, created_at, id)
    WHERE burst_reply <> '';
