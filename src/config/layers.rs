//! CONTRACT §1's layers as figment providers — defaults < `--config` file <
//! `AMQP_URL`… < `WORKER__<SECTION>__<KEY>` < flags — and, for an error about a
//! value, which variable, flag or file set it.

use std::borrow::Cow;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, Overrides};

/// The plain variables CONTRACT §1 names, and the key each sets.
const CONTRACT_VARS: [(&str, &str); 5] = [
    ("AMQP_URL", "amqp.url"),
    ("REDIS_URL", "redis.url"),
    ("DATABASE_URL", "database.url"),
    ("DATABASE_LISTEN_URL", "database.listen_url"),
    ("WORKER_ADMIN_ADDR", "admin.addr"),
];

/// The command-line flags that override keys (see `Overrides`).
const FLAGS: [(&str, &str); 2] = [("worker.concurrency", "--concurrency"), ("worker.id", "--worker-id")];

/// Every layer merged in order, and the names figment gives each one's values.
pub(super) fn figment(file: Option<(&Path, &str)>, flags: &Overrides) -> (Figment, Layers) {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    let mut file_layer = None;
    if let Some((path, text)) = file {
        let toml = Toml::string(text);
        file_layer = Some((toml.metadata().name, path.display().to_string()));
        figment = figment.merge(toml);
    }
    let flags = Serialized::default("worker", flags);
    let layers = Layers {
        file: file_layer,
        contract_env: contract_env().metadata().name,
        nested_env: nested_env().metadata().name,
        flags: flags.metadata().name,
    };
    (figment.merge(contract_env()).merge(nested_env()).merge(flags), layers)
}

/// `AMQP_URL`, `REDIS_URL`, `DATABASE_URL`, `DATABASE_LISTEN_URL`, `WORKER_ADMIN_ADDR`.
fn contract_env() -> SafeEnv {
    SafeEnv(Env::raw().only(&CONTRACT_VARS.map(|(var, _)| var)).map(|var| {
        let var = var.as_str().to_ascii_uppercase();
        CONTRACT_VARS.iter().find(|(name, _)| *name == var).map_or("", |(_, key)| *key).into()
    }))
}

/// `WORKER__<SECTION>__<KEY>`: any key. Merged after `contract_env`, so it wins.
fn nested_env() -> SafeEnv {
    SafeEnv(Env::prefixed("WORKER__").split("__").lowercase(true))
}

/// figment's `Env`, but a value its parser would panic on is taken as the plain
/// string it is. figment 0.10 slices a `"quoted\"` value at a character index as
/// if it were a byte index, so `WORKER__WORKER__ID="é\n"` would end the process
/// with a panic instead of a config error.
struct SafeEnv(Env);

impl Provider for SafeEnv {
    fn metadata(&self) -> Metadata {
        self.0.metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in self.0.iter() {
            let risky = raw.contains('"') && raw.contains('\\') && !raw.is_ascii();
            let value = if risky { Value::from(raw) } else { raw.parse().unwrap_or_else(|e| match e {}) };
            if let Value::Dict(_, nested) = figment::util::nest(key.as_str(), value) {
                join(&mut dict, nested);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Merges `from` into `into`, `from` winning, as figment's `Env` does.
fn join(into: &mut Dict, from: Dict) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Dict(_, mine)), Value::Dict(_, theirs)) => join(mine, theirs),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// The names figment gives each layer's values, to tell an operator which
/// variable, flag or file set a rejected value.
pub(super) struct Layers {
    file: Option<(Cow<'static, str>, String)>,
    contract_env: Cow<'static, str>,
    nested_env: Cow<'static, str>,
    flags: Cow<'static, str>,
}

impl Layers {
    /// `None` when the value is the built-in default.
    pub(super) fn origin(&self, figment: &Figment, key: &str) -> Option<String> {
        let layer = &figment.find_metadata(key)?.name;
        if *layer == self.contract_env {
            CONTRACT_VARS.iter().find(|(_, k)| *k == key).map(|(var, _)| (*var).to_owned())
        } else if *layer == self.nested_env {
            Some(format!("WORKER__{}", key.replace('.', "__").to_ascii_uppercase()))
        } else if *layer == self.flags {
            FLAGS.iter().find(|(k, _)| *k == key).map(|(_, flag)| (*flag).to_owned())
        } else {
            self.file.as_ref().filter(|(name, _)| name == layer).map(|(_, path)| path.clone())
        }
    }
}
