//! Tests of the configuration as `Config::load` sees it: layering
//! (`layering.rs`), rejected values and what they are reported with
//! (`rejections.rs`), and any environment at all (`properties.rs`).
#![allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error

use figment::providers::{Format, Toml};
use figment::{Figment, Jail};

use super::*;

mod layering;
mod properties;
mod rejections;

fn load_in(jail: &Jail, file: Option<&str>, flags: &Overrides) -> Result<Config, ConfigError> {
    let path = file.map(|text| {
        jail.create_file("worker.toml", text).map(|_| ()).ok();
        jail.directory().join("worker.toml")
    });
    Config::load(path.as_deref(), flags)
}

#[test]
fn the_repository_worker_toml_is_exactly_the_defaults() {
    let text = include_str!("../../../worker.toml");
    let from_file: Config = Figment::from(Toml::string(text)).extract().expect("worker.toml parses");
    assert_eq!(from_file, Config::default());
}

#[test]
fn debug_of_a_config_prints_no_secret() {
    let mut config = Config::default();
    config.amqp.url = "amqps://u:secret-1@rabbit:5671/vh".into();
    config.redis.url = "redis://:secret-2@a:1,redis://:secret-3@b:2".into();
    config.database.url = "host=db user=worker password='secret 4' dbname=worker".into();
    config.database.listen_url = "postgres://worker:secret-7@db-direct:5432/worker".into();
    config.responder.url = "https://bot:secret-5@agent/v1?api_key=secret-6".into();
    let printed = format!("{config:?} {:#?}", config.responder);
    for n in 1..=7 {
        assert!(!printed.contains(&format!("secret-{n}")) && !printed.contains("secret 4"), "{printed}");
    }
    for kept in [
        "rabbit:5671",
        "@a:1",
        "@b:2",
        "host=db",
        "@db-direct:5432",
        "@agent/v1",
        "api_key_env",
        "OPENAI_API_KEY",
    ] {
        assert!(printed.contains(kept), "{kept} in {printed}");
    }
    assert!(printed.contains("AmqpConfig { ") && printed.contains("prefetch: 16384"), "{printed}");
    let json = config.redacted().to_string();
    assert!(!json.contains("secret"), "{json}");
    assert_eq!(config.clone(), config, "PartialEq is untouched");
}
