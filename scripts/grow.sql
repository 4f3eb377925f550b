-- Years of traffic in a freshly migrated database, for `make bench GROWN=N`
-- (scripts/grow.sh runs this once into a template database; every bench run's
-- database is then copied from it). Set-based throughout: a handful of
-- INSERT ... SELECT over generate_series, the messages in chunks of a million
-- rows so that progress shows.
--
--   psql -v grown=N -v tenants=T -f scripts/grow.sql <template database>
--
-- What it writes, derived from row numbers through a hash (the same N gives the
-- same data, up to the generated row ids):
--   * T other tenants ("Grown Shop t", inactive: see below), of very unequal size;
--   * customers with 3 conversations each, ~N/20 conversations on average
--     ~10 pairs long (log-normal: half of them 5 pairs or fewer, one in 200
--     over 100, at most 1,000),
--     spread over the last two years, more of them recently; a customer's latest
--     conversation is still open (or handed off) when it ended in the last two
--     weeks, all others are closed;
--   * 5% of the customers are the bench's own 2,000 (seed.rs's tenants, channels
--     and phone numbers): their earlier, closed conversations, as a long-lived
--     shop's customers have. The bench's tenant rows are written as seed.rs
--     writes them (it skips them when present); their catalogs and open
--     conversations the bench seeds itself;
--   * N messages: per pair an inbound row and its reply, sharing a unique
--     fingerprint (64 hex chars) as the worker writes them, inserted in time
--     order as real traffic is (a conversation's rows spread over the table's
--     pages, not side by side), texts of 40-140 (inbound) and 60-200 (reply)
--     characters;
--   * an agent_interactions row per reply, and a fence for one pair in 5,000
--     (takeovers are rare).
--
-- The grown tenants are inactive because a worker warms every active tenant's
-- cache at start (3 queries each): a thousand of them would add start-up work
-- to the bench that has nothing to do with the number of messages.
--
-- Indexes, unique and foreign-key constraints of the four tables are dropped
-- while loading and then rebuilt from their own definitions (pg_get_indexdef,
-- pg_get_constraintdef), so whatever migrations/ defines is what the template
-- has: one sorted build per index instead of ten million random insertions.
-- (A database that grew for real has indexes somewhat less densely packed.)

\set ON_ERROR_STOP on
\set QUIET on
\pset tuples_only on
\pset format unaligned

-- Whatever happens, the template is only used once grow.sh marks it complete:
-- nothing here needs to survive a crash, so no waiting for WAL flushes.
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';
SET work_mem = '256MB';

SELECT clock_timestamp() AS started \gset
\set pairs_per_conversation 10
\set bench_tenants 10
\set bench_customers_per_tenant 200
\set bench_share 0.05
\set chunk 500000

-- A uniform number in [0, 1) from (row number, salt): the data is reproducible.
CREATE FUNCTION pg_temp.u(i bigint, salt bigint) RETURNS float8
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (hashint8extended(i, salt) & 9007199254740991)::float8 / 9007199254740992 $$;

-- A text of between lo and hi characters cut from a shop chat's phrases.
CREATE FUNCTION pg_temp.chat_text(i bigint, salt bigint, lo int, hi int, phrases text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT btrim(substr(phrases,
                              1 + floor(pg_temp.u(i, salt) * (length(phrases) - hi))::int,
                              lo + floor(pg_temp.u(i, salt + 1) * (hi - lo + 1))::int)) $$;

\set inbound_phrases 'Hi, do you have the blue running shoes in size 42? How much are they with delivery to Westlands? Can I pay with M-Pesa when the rider arrives? I ordered a phone case last week and it has not arrived yet, can you check order 58812? Is the shop open on Sunday afternoon? I want two of the cotton bedsheets, the queen size ones, and one pillow. Do you repair cracked phone screens and how long does it take? The second one please. What is the price of the leather wallet you posted yesterday? Can I return a jacket that does not fit if I still have the receipt? Do you deliver to Kisumu and how many days does it take? Thanks, that is all for today. Hello, is the 20 litre water dispenser back in stock? '
\set reply_phrases 'Yes, we have them in size 42 at 4,500 KES; delivery to Westlands is 250 KES and takes a day. We accept M-Pesa, Visa, Mastercard and cash on delivery. Your order 58812 left our store on Tuesday and the courier expects to deliver it tomorrow morning. We are open Monday to Saturday 9am to 7pm and Sunday 10am to 4pm. Here are the options I found: 1. Cotton bedsheet queen 2,800 KES 2. Bamboo bedsheet queen 3,900 KES 3. Microfibre pillow 900 KES. Screen repair takes about two hours and starts at 3,000 KES depending on the model. Unused items can be returned within 14 days with the receipt. We deliver countrywide within 3 days. I am handing you over to a colleague who will reply shortly. '

\echo '  tenants'
INSERT INTO tenants (id, name, is_active, created_at, updated_at)
SELECT md5('chat-worker-grown-tenant-' || t)::uuid, 'Grown Shop ' || t, false,
       now() - interval '760 days' + pg_temp.u(t, 1) * interval '700 days', now() - interval '1 day'
  FROM generate_series(1, :tenants) t;
-- As seed.rs writes them (its INSERT skips ids already present).
INSERT INTO tenants (id, name)
SELECT md5('chat-worker-bench-tenant-' || t)::uuid, 'Bench Shop ' || t FROM generate_series(1, :bench_tenants) t;

\echo '  planning conversations'
-- Candidate conversations, each with its number of pairs; cut where the pairs
-- add up to N/2 (the last one shortened), so that exactly N rows come out.
CREATE TEMP TABLE grow_conversations AS
WITH candidates AS (
    -- Log-normal lengths (sigma 1.2, mean ~:pairs_per_conversation pairs): half of
    -- them 5 pairs or fewer, one in 200 over 100, at most 1,000. z is a
    -- standard normal (Box-Muller).
    SELECT i, least(1000, greatest(1, round(exp(ln(:pairs_per_conversation) - 0.72 + 1.2 * z))))::int AS pairs
      FROM (SELECT i, sqrt(-2 * ln(1 - pg_temp.u(i, 0))) * cos(2 * pi() * pg_temp.u(i, 6)) AS z
              FROM generate_series(1, ceil(:grown / 2.0 / :pairs_per_conversation * 1.5)::bigint) i) normal),
cut AS (
    SELECT i, pairs, sum(pairs) OVER (ORDER BY i) AS upto FROM candidates),
kept AS (
    SELECT i, least(pairs, :grown / 2 - (upto - pairs))::int AS pairs, (i - 1) / 3 AS customer
      FROM cut WHERE upto - pairs < :grown / 2),
-- The bench tenants numbered as seed.rs numbers them (row_number by name).
bench AS (
    SELECT id, row_number() OVER (ORDER BY name) AS k FROM tenants
     WHERE id IN (SELECT md5('chat-worker-bench-tenant-' || t)::uuid FROM generate_series(1, :bench_tenants) t)),
who AS (
    SELECT kept.*, pg_temp.u(customer, 2) < :bench_share AS of_bench,
           -- seed.rs's customer b: tenant k = b / 200 + 1, number c = b % 200.
           customer % (:bench_tenants * :bench_customers_per_tenant) AS b,
           -- Tenants of very unequal size: tenant 1 has the most customers.
           1 + floor(:tenants * pg_temp.u(customer, 1) ^ 2)::int AS tenant,
           -- Two years back, more traffic recently; at least an hour ago.
           now() - interval '1 hour' - interval '730 days' * (1 - sqrt(pg_temp.u(i, 3))) AS ends,
           30 + floor(pg_temp.u(i, 4) * 1200)::int AS gap_s
      FROM kept),
placed AS (
    SELECT w.i, w.pairs, w.gap_s, w.ends, w.of_bench,
           CASE WHEN w.of_bench THEN bench.id ELSE md5('chat-worker-grown-tenant-' || w.tenant)::uuid END AS tenant_id,
           -- vocab::CHANNELS and vocab::CUSTOMER_NAMES, indexed as seed.rs does.
           (ARRAY['whatsapp', 'web', 'sms', 'telegram'])[1 + (CASE WHEN w.of_bench THEN w.b % :bench_customers_per_tenant ELSE w.customer END) % 4] AS channel,
           CASE WHEN w.of_bench
                THEN '+2547' || lpad((bench.k * 10000 + w.b % :bench_customers_per_tenant)::text, 8, '0')
                ELSE '+2541' || lpad(w.customer::text, 8, '0') END AS customer_external_id,
           (ARRAY['Amina', 'Brian', 'Wanjiru', 'Otieno', 'Fatuma', 'Kevin', 'Achieng', 'Mwangi', 'Zawadi', 'Juma', 'Nia', 'Baraka'])
               [1 + (CASE WHEN w.of_bench THEN w.b % :bench_customers_per_tenant ELSE w.customer END) % 12] AS customer_name
      FROM who w LEFT JOIN bench ON w.of_bench AND bench.k = w.b / :bench_customers_per_tenant + 1)
SELECT p.i, gen_random_uuid() AS id, p.tenant_id, p.channel, p.customer_external_id, p.customer_name,
       p.pairs, p.gap_s,
       p.ends - make_interval(secs => (p.pairs - 1) * p.gap_s + 10) AS created_at, p.ends AS updated_at,
       -- A customer's latest conversation may still be current; the bench's own
       -- customers' current ones are seed.rs's.
       CASE WHEN NOT p.of_bench AND p.ends > now() - interval '14 days'
                 AND row_number() OVER (PARTITION BY p.tenant_id, p.channel, p.customer_external_id ORDER BY p.ends DESC) = 1
            THEN CASE WHEN pg_temp.u(p.i, 5) < 0.15 THEN 'handoff' ELSE 'open' END
            ELSE 'closed' END AS status
  FROM placed p;
ANALYZE grow_conversations;
SELECT format('    %s conversations, %s of them the bench customers'' (closed), %s current; %s pairs',
              count(*), count(*) FILTER (WHERE tenant_id IN (SELECT md5('chat-worker-bench-tenant-' || t)::uuid FROM generate_series(1, :bench_tenants) t)),
              count(*) FILTER (WHERE status <> 'closed'), sum(pairs))
  FROM grow_conversations;
SELECT sum(pairs) = :grown / 2 AS enough_pairs FROM grow_conversations \gset
\if :enough_pairs
\else
  \echo 'grow.sql: the candidate conversations hold fewer than N/2 pairs'
  \quit 3
\endif

-- Each pair (inbound + reply) with its time and fingerprint, numbered in time
-- order: the messages go in in that order, a chunk at a time.
\echo '  planning pairs'
CREATE TEMP TABLE grow_pairs AS
SELECT row_number() OVER (ORDER BY at) AS n, *
  FROM (SELECT c.id AS conversation_id, c.tenant_id, j,
               c.created_at + make_interval(secs => (j - 1) * c.gap_s) AS at,
               encode(sha256(convert_to('grown:' || c.id || ':' || j, 'UTF8')), 'hex') AS fingerprint
          FROM grow_conversations c CROSS JOIN generate_series(1, c.pairs) j) p;
CREATE INDEX ON grow_pairs (n);
ANALYZE grow_pairs;
SELECT format('    %s pairs planned (%s s)', count(*), round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)))
  FROM grow_pairs;

-- The indexes and constraints of the tables about to be loaded, as DDL to drop
-- now and to run again after the load. Foreign keys first to drop, last to add
-- (they need the unique indexes they point at).
\echo '  dropping indexes and constraints for the load'
CREATE TEMP TABLE grow_ddl AS
WITH grown_tables AS (
    SELECT unnest(ARRAY['conversations', 'messages', 'agent_interactions', 'fences']::regclass[]) AS rel),
constraints AS (
    SELECT c.oid, c.conname, c.conrelid, c.contype FROM pg_constraint c
     WHERE c.contype IN ('p', 'u', 'f')
       AND (c.conrelid IN (SELECT rel FROM grown_tables) OR c.confrelid IN (SELECT rel FROM grown_tables)))
SELECT CASE contype WHEN 'f' THEN 1 ELSE 2 END AS drop_order, CASE contype WHEN 'f' THEN 2 ELSE 1 END AS create_order,
       format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_ddl,
       format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid)) AS create_ddl
  FROM constraints
UNION ALL
SELECT 3, 1, format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid)
  FROM pg_index i
 WHERE i.indrelid IN (SELECT rel FROM grown_tables)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid
                                                   AND c.contype IN ('p', 'u', 'x'));
SELECT drop_ddl FROM grow_ddl ORDER BY drop_order \gexec

\echo '  conversations'
INSERT INTO conversations (id, tenant_id, channel, customer_external_id, customer_name, status, created_at, updated_at)
SELECT id, tenant_id, channel, customer_external_id, customer_name, status, created_at, updated_at
  FROM grow_conversations ORDER BY created_at;

-- Per chunk of pairs: their two messages rows, then the reply's interaction.
-- A reply's answer (responder, confidence, handoff, listed items) is drawn from
-- the pair's number, so both tables agree. 30% came from an LLM responder.
\echo '  messages and agent_interactions, in time order'
SELECT format($chunk$
INSERT INTO messages (conversation_id, direction, provider_message_id, fingerprint, text, created_at,
                      received_at, attachments, metadata, handoff, confidence, reply_references,
                      reply_list_size, responder)
SELECT p.conversation_id, v.direction, v.provider_message_id, p.fingerprint, v.text, v.created_at,
       v.received_at, v.attachments, v.metadata, v.handoff, v.confidence, v.reply_references,
       v.reply_list_size, v.responder
  FROM grow_pairs p
 CROSS JOIN LATERAL (SELECT pg_temp.u(p.n, 20) < 0.3 AS llm, pg_temp.u(p.n, 21) < 0.03 AS handoff,
                            CASE WHEN pg_temp.u(p.n, 22) < 0.4 THEN 0
                                 WHEN pg_temp.u(p.n, 22) < 0.65 THEN 1
                                 ELSE 2 + floor(pg_temp.u(p.n, 23) * 4)::int END AS listed,
                            p.at + make_interval(secs => 2 + pg_temp.u(p.n, 24) * (CASE WHEN pg_temp.u(p.n, 20) < 0.3 THEN 6 ELSE 1 END)) AS replied_at) a
 CROSS JOIN LATERAL (VALUES
     ('in', 'wamid.' || upper(substr(p.fingerprint, 1, 28)),
      pg_temp.chat_text(p.n, 30, 40, 140, %1$L), p.at, p.at - interval '1 second', '[]'::jsonb, '{}'::jsonb,
      NULL::boolean, NULL::real, NULL::jsonb, NULL::smallint, NULL::text),
     ('out', 'reply:' || p.fingerprint,
      pg_temp.chat_text(p.n, 40, 60, 200, %2$L), a.replied_at, NULL, NULL, NULL,
      a.handoff, (0.5 + pg_temp.u(p.n, 25) * 0.49)::real,
      (SELECT coalesce(jsonb_agg(jsonb_build_object('kind', CASE WHEN pg_temp.u(p.n, 26) < 0.8 THEN 'product' ELSE 'service' END,
                                                    'id', md5(p.fingerprint || r)::uuid, 'position', r) ORDER BY r), '[]')
         FROM generate_series(1, a.listed) r),
      a.listed::smallint, CASE WHEN a.llm THEN 'http' ELSE 'builtin' END))
   AS v(direction, provider_message_id, text, created_at, received_at, attachments, metadata,
        handoff, confidence, reply_references, reply_list_size, responder)
 WHERE p.n BETWEEN %3$s AND %4$s
 ORDER BY p.n, v.direction
$chunk$, :'inbound_phrases', :'reply_phrases', lo, hi) AS load_messages,
       format($chunk$
INSERT INTO agent_interactions (tenant_id, conversation_id, fingerprint, responder, model, confidence, handoff,
                                prompt_tokens, completion_tokens, cost, latency_ms, created_at)
SELECT p.tenant_id, p.conversation_id, p.fingerprint, CASE WHEN llm THEN 'http' ELSE 'builtin' END,
       CASE WHEN llm THEN 'gpt-4o-mini' END, (0.5 + pg_temp.u(p.n, 25) * 0.49)::real, pg_temp.u(p.n, 21) < 0.03,
       CASE WHEN llm THEN 900 + floor(pg_temp.u(p.n, 27) * 3000)::int END,
       CASE WHEN llm THEN 40 + floor(pg_temp.u(p.n, 28) * 200)::int END,
       CASE WHEN llm THEN round((0.0002 + pg_temp.u(p.n, 29) * 0.002)::numeric, 6) END,
       CASE WHEN llm THEN 400 + floor(pg_temp.u(p.n, 24) * 5600)::int ELSE 1 + floor(pg_temp.u(p.n, 24) * 30)::int END,
       p.at + make_interval(secs => 2 + pg_temp.u(p.n, 24) * (CASE WHEN llm THEN 6 ELSE 1 END))
  FROM grow_pairs p CROSS JOIN LATERAL (SELECT pg_temp.u(p.n, 20) < 0.3 AS llm) a
 WHERE p.n BETWEEN %1$s AND %2$s
 ORDER BY p.n
$chunk$, lo, hi) AS load_interactions,
       format($progress$SELECT format('    %%s of %%s messages rows (%%s s)', %1$s, %2$s,
                     round(extract(epoch FROM clock_timestamp() - %3$L::timestamptz)))$progress$,
              2 * hi, 2 * (SELECT count(*) FROM grow_pairs), :'started') AS progress
  FROM (SELECT lo, least(lo + :chunk - 1, (SELECT count(*) FROM grow_pairs)) AS hi
          FROM generate_series(1, (SELECT count(*) FROM grow_pairs), :chunk) lo) chunks
 ORDER BY lo \gexec

\echo '  fences'
INSERT INTO fences (fingerprint, token, created_at)
SELECT fingerprint, 2 + floor(pg_temp.u(n, 40) * 1000000)::bigint, at + interval '30 seconds'
  FROM grow_pairs WHERE pg_temp.u(n, 41) < 0.0002;

\echo '  rebuilding indexes and constraints'
-- Each statement announced with the time so far, taken when it starts.
SELECT format('SELECT format(''    (%%s s) %%s'', round(extract(epoch FROM clock_timestamp() - %L::timestamptz)), %L)',
              :'started', left(create_ddl, 110)),
       create_ddl
  FROM grow_ddl ORDER BY create_order, create_ddl \gexec

DROP TABLE grow_pairs, grow_conversations, grow_ddl;
SELECT format('  loaded in %s s; VACUUM ANALYZE', round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)));
-- Visibility map and hint bits set, statistics fresh: as a database that has
-- been autovacuumed for years, and what the planner should plan the worker's
-- queries on.
VACUUM ANALYZE;
SELECT format('  grown in %s s: %s', round(extract(epoch FROM clock_timestamp() - :'started'::timestamptz)),
              pg_size_pretty(pg_database_size(current_database())));
