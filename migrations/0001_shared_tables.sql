-- The tables CONTRACT §5 shares with the admin app. IF NOT EXISTS: on an install
-- where the admin app created them first, the worker only adds what it needs.

CREATE TABLE IF NOT EXISTS tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    is_active   boolean NOT NULL DEFAULT true,
    settings    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS products (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name         text NOT NULL,
    description  text NOT NULL DEFAULT '',
    category     text NOT NULL DEFAULT '',
    price        numeric(12, 2) NOT NULL DEFAULT 0,
    currency     text NOT NULL DEFAULT 'USD',
    is_active    boolean NOT NULL DEFAULT true,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS products_tenant_active ON products (tenant_id) WHERE is_active;

CREATE TABLE IF NOT EXISTS services (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name              text NOT NULL,
    description       text NOT NULL DEFAULT '',
    price             numeric(12, 2) NOT NULL DEFAULT 0,
    currency          text NOT NULL DEFAULT 'USD',
    duration_minutes  integer,
    is_active         boolean NOT NULL DEFAULT true,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS services_tenant_active ON services (tenant_id) WHERE is_active;

CREATE TABLE IF NOT EXISTS knowledge_entries (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    entry_type  text NOT NULL DEFAULT 'faq',
    title       text NOT NULL,
    content     text NOT NULL,
    is_active   boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS knowledge_entries_tenant_active ON knowledge_entries (tenant_id) WHERE is_active;

CREATE TABLE IF NOT EXISTS conversations (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id             uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    channel               text NOT NULL,
    customer_external_id  text NOT NULL,
    customer_name         text,
    status                text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'handoff', 'closed')),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
-- A customer has at most one current (not closed) conversation per tenant and channel:
-- two workers opening one at the same moment end up sharing it.
CREATE UNIQUE INDEX IF NOT EXISTS conversations_current
    ON conversations (tenant_id, channel, customer_external_id) WHERE status <> 'closed';

CREATE TABLE IF NOT EXISTS messages (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    conversation_id      uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction            text NOT NULL CHECK (direction IN ('in', 'out')),
    provider_message_id  text NOT NULL,
    fingerprint          text NOT NULL,
    text                 text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- The worker's own columns: what it needs to re-publish a committed reply exactly.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS received_at timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS attachments jsonb;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS metadata jsonb;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS handoff boolean;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS confidence real;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_references jsonb;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS responder text;

-- The last line of "never two": at most one inbound and one reply row per fingerprint,
-- whatever Redis says.
CREATE UNIQUE INDEX IF NOT EXISTS messages_fingerprint_direction ON messages (fingerprint, direction);
-- History, oldest first, keyset-paged.
CREATE INDEX IF NOT EXISTS messages_conversation_created ON messages (conversation_id, created_at, id);
