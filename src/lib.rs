//! # chat-worker
//!
//! Consumes inbound customer messages from RabbitMQ and answers each exactly once
//! (CONTRACT §3: processed, duplicate, rejected or failed — never lost, never twice).
//!
//! # Layout
//!
//! The message's path, one module per stage (see `pipeline.rs`, which reads like it):
//!
//! - [`decode`] — bytes -> validated [`decode::Inbound`], or a [`outcome::Rejection`];
//! - [`fingerprint`] — the message's identity (CONTRACT §2);
//! - [`dedup`] — processing state and lock in Redis: `claim`, `complete`, `abandon`;
//! - [`catalog`] — a tenant's profile, catalog and knowledge, cached in two tiers,
//!   invalidated through PostgreSQL notifications;
//! - [`references`] — the latest numbered list a conversation was shown;
//! - [`respond`] — the [`respond::Responder`] trait: builtin, openai, http;
//! - [`store`] — PostgreSQL: tenants, conversations, `record_exchange`, migrations;
//! - [`reply`] — the reply body of CONTRACT §4;
//! - [`broker`] — RabbitMQ: topology, confirmed publishes, settling deliveries;
//! - [`outcome`] — the outcome type and the one decision ack / retry / dead-letter;
//! - [`pipeline`] — one delivery, top to bottom, to its [`outcome::Outcome`].
//!
//! Around it:
//!
//! - [`worker`] — `worker run`: consume loop, concurrency, shutdown, reconnection;
//! - [`services`] — waiting for RabbitMQ, Redis and PostgreSQL at start;
//! - [`config`] — layered configuration (flags > environment > file > defaults);
//! - [`redact`] — keeps passwords out of every message;
//! - [`telemetry`] — Prometheus metrics; [`admin`] — `/metrics`, `/healthz`, `/readyz`.

#![warn(unreachable_pub)]

pub mod admin;
pub mod broker;
pub mod catalog;
pub mod config;
pub mod decode;
pub mod dedup;
pub mod model;
pub mod outcome;
pub mod pipeline;
pub mod redact;
pub mod references;
pub mod reply;
pub mod respond;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;
