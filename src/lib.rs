//! # chat-worker
//!
//! Consumes inbound customer messages from RabbitMQ and answers each exactly once
//! (CONTRACT §3: processed, duplicate, rejected or failed — never lost, never twice).
//!
//! # Layout
//!
//! At the bottom, [`model`]: the types every stage shares (inbound message,
//! fingerprint, envelope, references, answer, catalog items, direction and
//! status); it depends on nothing of the worker's.
//!
//! The message's path, one module per stage (see [`pipeline`], which reads like it):
//!
//! - [`decode`] — bytes -> validated [`model::Inbound`], or a [`outcome::Rejection`];
//! - [`dedup`] — processing state and lock in Redis: `claim`, `complete`,
//!   `abandon`, and the lease guard (renewal, deadline, lease loss);
//! - [`catalog`] — a tenant's profile, catalog and knowledge, cached in two tiers,
//!   invalidated through PostgreSQL notifications;
//! - [`references`] — the latest numbered list a conversation was shown: its key,
//!   encoding, and which source wins;
//! - [`respond`] — the [`respond::Responder`] trait: builtin, openai, http;
//! - [`store`] — PostgreSQL: tenants, conversations, the group commit, migrations;
//! - [`reply`] — the reply body of CONTRACT §4;
//! - [`broker`] — RabbitMQ: topology, confirmed publishes, settling deliveries;
//!   the only module that sees AMQP types;
//! - [`outcome`] — the outcome, its typed failure, the one decision ack / retry /
//!   dead-letter, and the one place a settled delivery is logged and counted;
//! - [`pipeline`] — one [`model::Envelope`], top to bottom, to its [`outcome::Outcome`].
//!
//! Around it:
//!
//! - [`worker`] — `worker run`: wiring, consume session, background tasks, reconnection;
//! - [`services`] — waiting for RabbitMQ, Redis and PostgreSQL at start;
//!   [`redis_conn`] — one Redis primary or a Redis Cluster, behind one type;
//!   [`keys`] — every Redis key, laid out for Redis Cluster's slots;
//! - [`config`] — layered configuration (flags > environment > file > defaults);
//! - [`redact`] — keeps passwords out of every message;
//! - [`telemetry`] — Prometheus metrics, spans, trace propagation; [`admin`] —
//!   `/metrics`, `/healthz`, `/readyz`; [`tls`] — the crypto provider.

#![warn(unreachable_pub)]

pub mod admin;
pub mod broker;
pub mod catalog;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod keys;
pub mod model;
pub mod outcome;
pub mod pipeline;
pub mod redact;
pub mod redis_conn;
pub mod references;
pub mod reply;
pub mod respond;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;
