//! Integration tests on the real RabbitMQ, Redis and PostgreSQL. One binary, one
//! module per behaviour; each test builds its own isolated world (see `harness`).

mod harness;

mod admin_endpoint;
mod admin_rows;
mod backpressure;
mod batch_isolation;
mod budget;
mod bursts;
mod catalog_cache;
mod cli;
mod conversation;
mod corpus;
mod crash;
mod deploy_files;
mod fairness;
mod fencing;
mod group_commit;
mod happy_path;
mod history_cli;
mod hostile;
mod hostile_responders;
mod in_progress;
mod k8s_manifests;
mod observability;
mod operator;
mod pipeline;
mod pooler;
mod race;
mod raw_amqp;
mod redis_loss;
mod refused_publish;
mod rejects;
mod responders;
mod retention;
mod retries;
mod shutdown;
mod tenant_limits;
mod traces;
mod turns;
mod upgrade;
