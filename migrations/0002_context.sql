-- Context: cache invalidation fanned out by PostgreSQL itself, agent interactions,
-- and what the history and reference queries need.

-- A per-tenant version of everything the worker caches about a tenant (its row,
-- catalog and knowledge). Any change, by any program, bumps it and notifies
-- `chat_worker_cache` with '<tenant id>:<version>'. Workers drop what they cached
-- at an older version, so an entry loaded just before a change can never outlive it.
CREATE TABLE IF NOT EXISTS catalog_versions (
    tenant_id  uuid PRIMARY KEY,
    version    bigint NOT NULL
);

CREATE OR REPLACE FUNCTION chat_worker_bump(t uuid) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    INSERT INTO catalog_versions AS cv (tenant_id, version) VALUES (t, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET version = cv.version + 1
    RETURNING version INTO v;
    PERFORM pg_notify('chat_worker_cache', t::text || ':' || v::text);
    RETURN v;
END $$;

-- Statement-level, so a bulk UPDATE of a thousand products costs one bump per tenant.
CREATE OR REPLACE FUNCTION chat_worker_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE t uuid;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR t IN SELECT DISTINCT tenant_id FROM new_rows LOOP PERFORM chat_worker_bump(t); END LOOP;
    ELSIF TG_OP = 'UPDATE' THEN
        FOR t IN SELECT tenant_id FROM new_rows UNION SELECT tenant_id FROM old_rows LOOP
            PERFORM chat_worker_bump(t);
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR t IN SELECT DISTINCT tenant_id FROM old_rows LOOP PERFORM chat_worker_bump(t); END LOOP;
    ELSE -- TRUNCATE: no rows to look at, so every tenant.
        FOR t IN SELECT id FROM tenants LOOP PERFORM chat_worker_bump(t); END LOOP;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION chat_worker_tenant_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM chat_worker_bump(CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    RETURN NULL;
END $$;

DO $$
DECLARE tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['products', 'services', 'knowledge_entries'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS chat_worker_ins ON %I', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS chat_worker_upd ON %I', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS chat_worker_del ON %I', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS chat_worker_trunc ON %I', tbl);
        EXECUTE format('CREATE TRIGGER chat_worker_ins AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION chat_worker_catalog_changed()', tbl);
        EXECUTE format('CREATE TRIGGER chat_worker_upd AFTER UPDATE ON %I REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION chat_worker_catalog_changed()', tbl);
        EXECUTE format('CREATE TRIGGER chat_worker_del AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows
                        FOR EACH STATEMENT EXECUTE FUNCTION chat_worker_catalog_changed()', tbl);
        EXECUTE format('CREATE TRIGGER chat_worker_trunc AFTER TRUNCATE ON %I
                        FOR EACH STATEMENT EXECUTE FUNCTION chat_worker_catalog_changed()', tbl);
    END LOOP;
END $$;

DROP TRIGGER IF EXISTS chat_worker_tenant ON tenants;
CREATE TRIGGER chat_worker_tenant AFTER INSERT OR UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION chat_worker_tenant_changed();

-- One row per answer, for statistics: who answered, how sure, how fast, at what cost.
CREATE TABLE IF NOT EXISTS agent_interactions (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL,
    conversation_id    uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    fingerprint        text NOT NULL UNIQUE,
    responder          text NOT NULL,
    model              text,
    confidence         real NOT NULL,
    handoff            boolean NOT NULL,
    prompt_tokens      integer,
    completion_tokens  integer,
    cost               numeric(12, 6),
    latency_ms         integer NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS agent_interactions_tenant_created ON agent_interactions (tenant_id, created_at);

-- How many catalog items a reply listed; the latest reply that listed two or more is
-- the list that "2" or "the second one" points back at.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_list_size smallint;
CREATE INDEX IF NOT EXISTS messages_latest_list
    ON messages (conversation_id, created_at DESC, id DESC) WHERE direction = 'out' AND reply_list_size >= 2;
-- `worker history` finds a customer's conversations, newest first.
CREATE INDEX IF NOT EXISTS conversations_customer
    ON conversations (tenant_id, channel, customer_external_id, updated_at DESC);
