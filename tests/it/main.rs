//! Integration tests on the real RabbitMQ, Redis and PostgreSQL. One binary, one
//! module per behaviour; each test builds its own isolated world (see `harness`).

mod harness;

mod admin_endpoint;
mod budget;
mod catalog_cache;
mod cli;
mod conversation;
mod corpus;
mod crash;
mod deploy_files;
mod fencing;
mod group_commit;
mod happy_path;
mod history_cli;
mod http_stub;
mod in_progress;
mod observability;
mod operator;
mod race;
mod redis_loss;
mod rejects;
mod responders;
mod retries;
mod shutdown;
mod traces;
mod wire;
