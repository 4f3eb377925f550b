//! What a test reads or changes behind the workers' backs: the rows they wrote,
//! a seeded catalog, failing or slow inserts, another worker's lock, Redis
//! losing its data, and the proxies their connections go through.

use std::collections::HashMap;

use chat_worker::keys::Keys;
use serde_json::Value;
use testkit::proxy::Proxy;
use uuid::Uuid;

use super::TestEnv;

impl TestEnv {
    /// A small shop: four products, one service, two FAQ entries. Returns product ids by name.
    /// Replaces the test tenant's `settings` (before its workers start: the
    /// profile is cached).
    pub async fn set_tenant_settings(&self, settings: Value) {
        sqlx::query("UPDATE tenants SET settings = $2 WHERE id = $1")
            .bind(self.tenant_id)
            .bind(settings)
            .execute(&self.pool)
            .await
            .expect("tenant settings");
    }

    pub async fn seed_catalog(&self, tenant: Uuid) -> HashMap<String, Uuid> {
        testkit::seed::small_shop(&self.pool, tenant).await.expect("seed catalog")
    }

    /// (inbound rows, reply rows) for a fingerprint.
    pub async fn rows(&self, fingerprint: &str) -> (i64, i64) {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE direction = 'in'), count(*) FILTER (WHERE direction = 'out')
               FROM messages WHERE fingerprint = $1",
        )
        .bind(fingerprint)
        .fetch_one(&self.pool)
        .await
        .expect("count rows")
    }

    pub async fn total_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages").fetch_one(&self.pool).await.expect("count")
    }

    /// Makes a live worker (another process, as far as the workers under test can
    /// tell) hold the lock of `fingerprint`.
    pub async fn hold_lock_elsewhere(&self, message: &Value) {
        let keys = Keys::new(&self.config.redis.key_prefix);
        let (shard, fp) = super::shard_of(message);
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(keys.alive("elsewhere"))
            .arg("w-elsewhere")
            .arg("PX")
            .arg(120_000)
            .query_async::<()>(&mut redis)
            .await
            .expect("set");
        redis::cmd("SET")
            .arg(keys.lock(shard, &fp))
            .arg("token|elsewhere|w-elsewhere")
            .arg("PX")
            .arg(120_000)
            .query_async::<()>(&mut redis)
            .await
            .expect("set");
    }

    /// The other worker gives the lock up (e.g. its attempt failed).
    pub async fn release_lock_elsewhere(&self, message: &Value) {
        let (shard, fp) = super::shard_of(message);
        let key = Keys::new(&self.config.redis.key_prefix).lock(shard, &fp);
        redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await.expect("del");
    }

    /// Runs `plpgsql` (a function body) before every insert into `messages`, as a
    /// misbehaving database would: `RAISE EXCEPTION ...` to fail, `PERFORM pg_sleep(..)`
    /// to be slow. `remove_insert_trigger` undoes it.
    pub async fn on_message_insert(&self, plpgsql: &str) {
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION on_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {plpgsql}; RETURN NULL; END $$;
             CREATE TRIGGER on_insert BEFORE INSERT ON messages FOR EACH STATEMENT EXECUTE FUNCTION on_insert();"
        ))
        .execute(&self.pool)
        .await
        .expect("insert trigger");
    }

    /// Like `on_message_insert`, but per row and only for rows matching `condition`
    /// (over `NEW`): one message refused among others.
    pub async fn on_message_row_insert(&self, condition: &str, plpgsql: &str) {
        sqlx::raw_sql(&format!(
            "CREATE FUNCTION on_row_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {plpgsql}; RETURN NEW; END $$;
             CREATE TRIGGER on_row_insert BEFORE INSERT ON messages FOR EACH ROW WHEN ({condition})
             EXECUTE FUNCTION on_row_insert();"
        ))
        .execute(&self.pool)
        .await
        .expect("row insert trigger");
    }

    pub async fn remove_insert_trigger(&self) {
        sqlx::raw_sql("DROP TRIGGER on_insert ON messages").execute(&self.pool).await.expect("drop trigger");
    }

    /// Routes this test's workers through counting proxies (see `testkit::proxy`).
    pub fn route_through(&mut self, pg: Option<&Proxy>, redis: Option<&Proxy>) {
        if let Some(pg) = pg {
            self.config.database.url =
                testkit::urls::proxied(&self.config.database.url, pg.addr).expect("the test's database URL");
        }
        if let Some(redis) = redis {
            self.config.redis.url = format!("redis://{}/0", redis.addr);
        }
    }

    /// This test's database, as PostgreSQL names it (the URL's path, without its options).
    pub fn database_name(&self) -> String {
        testkit::urls::database_name(&self.config.database.url).unwrap_or_default()
    }

    /// host:port of the real PostgreSQL and Redis, for proxies to forward to.
    pub fn upstreams(&self) -> (String, String) {
        let host_port = |url: &str, port: u16| {
            testkit::urls::upstream(url, port).unwrap_or_else(|_| format!("127.0.0.1:{port}"))
        };
        (host_port(&self.config.database.url, 5432), host_port(&self.config.redis.url, 6379))
    }

    /// Deletes every Redis key of this test, as a Redis that lost its data would.
    pub async fn flush_redis(&self) {
        let pattern = format!("{}*", self.config.redis.key_prefix);
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(&pattern).query_async(&mut self.redis.clone()).await.expect("keys");
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut self.redis.clone()).await.expect("del");
        }
    }
}
