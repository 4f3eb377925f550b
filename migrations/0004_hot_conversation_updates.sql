-- Every reply updates its conversation's updated_at. With updated_at in an index,
-- each of those updates wrote a new entry into every index of `conversations`
-- (three) and left dead ones behind to vacuum: the busiest conversations bloated
-- them fastest. Without it, the update is HOT (heap-only): one new row version on
-- the same page, no index touched, as long as the page has room, hence the
-- fillfactor (it applies to pages written from now on).
-- `worker history` still finds a customer's conversations through the new index
-- and sorts the handful it finds.
-- On a large existing table, build the new index first with
-- CREATE INDEX CONCURRENTLY conversations_by_customer ...; this migration then skips it.
CREATE INDEX IF NOT EXISTS conversations_by_customer
    ON conversations (tenant_id, channel, customer_external_id);
DROP INDEX IF EXISTS conversations_customer;
ALTER TABLE conversations SET (fillfactor = 90);
