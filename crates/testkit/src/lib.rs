//! What the integration tests (`tests/it`) and the load tools (`tools/loadtest`)
//! both stand on, none of it needing the worker's own library: counting proxies
//! in front of PostgreSQL and Redis, a stub HTTP agent, a gateway's publishing
//! on RabbitMQ, seeded rows, and database URLs taken apart.
//!
//! It must not depend on `chat-worker`: the tests are that package's own target,
//! and a dependency back on it would build the library twice, with types that
//! do not match. What needs the worker's types stays in the tests or the tools.

pub mod gateway;
pub mod http_stub;
pub mod proxy;
pub mod seed;
pub mod urls;
