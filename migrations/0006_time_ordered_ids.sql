-- Growth (issue 14): the ids of rows written once per message are time-ordered
-- (UUID version 7: 48 bits of milliseconds, then random bits), so each insert
-- lands at the right edge of the primary key instead of on a random leaf of an
-- index of tens of millions of entries. A random leaf is a page read when the
-- index outgrows memory and, the first time it is touched after a checkpoint, a
-- full-page image in the WAL: on a table grown to 10 million rows, `make bench`
-- measured ~3.8 such images per message, most of them primary-key leaves.
--
-- Only the default changes: ids already stored stay valid, other writers that
-- set their own ids are unaffected (an id now tells when its row was written, as
-- created_at does).
-- PostgreSQL 18 has uuidv7(); this is the same layout for the versions before.
-- ALTER TABLE takes an ACCESS EXCLUSIVE lock, for an instant once it has it; queued
-- behind a long reader (a dump, a prune batch) it would hold up every worker's
-- statement on the table meanwhile. Give up instead: `worker migrate` fails with
-- a lock timeout, nothing is changed, and running it again later finishes it.
SET LOCAL lock_timeout = '5s';

CREATE OR REPLACE FUNCTION chat_worker_uuid_v7() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    placing substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;

ALTER TABLE messages ALTER COLUMN id SET DEFAULT chat_worker_uuid_v7();
ALTER TABLE agent_interactions ALTER COLUMN id SET DEFAULT chat_worker_uuid_v7();
