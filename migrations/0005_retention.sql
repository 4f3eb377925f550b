-- Growth (issue 14): what `worker prune` deletes by age, and what `worker stats`
-- filters on, each found through an index instead of a scan of the whole table.
-- created_at only grows, so each index is appended to at its right edge.
--
-- Not indexed on purpose: conversations.updated_at. Every reply updates it, and an
-- index on it would make each of those updates write a new entry into every index
-- of `conversations` (0004 removed the last one for that reason). `worker stats`
-- finds one tenant's conversations through (tenant_id, ...) and, for all tenants,
-- reads the table, which `worker prune` keeps to the retention period.
--
-- Plain CREATE INDEX, in the migration's transaction: it blocks writes to the table
-- while it builds (1.9 s for 2 million messages on the 2-core test machine). On a
-- large live table, build each first with CREATE INDEX CONCURRENTLY and the same
-- name; this migration then skips it (docs/upgrading.md).
CREATE INDEX IF NOT EXISTS messages_created ON messages (created_at);
CREATE INDEX IF NOT EXISTS agent_interactions_created ON agent_interactions (created_at);
CREATE INDEX IF NOT EXISTS fences_created ON fences (created_at);
