-- Deleting a conversation (`worker prune`, or the admin app) cascades to its
-- agent_interactions through a foreign key that had no index: PostgreSQL then
-- scanned the whole table once per conversation deleted (89 ms each with a
-- million interactions; a prune batch of 10,000 conversations held its row
-- locks for minutes). With the index, 2,000 conversations take ~60 ms.
-- A conversation's interactions are appended together, so the index is written
-- at few places at a time.
SET LOCAL lock_timeout = '10s';
CREATE INDEX IF NOT EXISTS agent_interactions_conversation ON agent_interactions (conversation_id);
