//! # wharf-amqp
//!
//! Wharf's AMQP 1.0 adapter. In data-flow order:
//! - [`frame`]: protocol headers, frames, the length of an encoded value;
//! - [`engine`]: one connection's protocol state machine without I/O (bytes in, events out,
//!   the broker's answers in, bytes out), on `fe2o3-amqp-types` and `serde_amqp`;
//! - [`message`]: the sections of a stored message and its record layout (a versioned
//!   contract);
//! - [`bridge`]: MQTT ↔ AMQP mapping at delivery (`/topic/<topic>` addresses reach MQTT
//!   topics);
//! - [`attach`]: what an attach asks for (which address, how a receiver reads it), decided
//!   without I/O;
//! - [`broker`]: addresses (queues, topics, temporary reply addresses) over the log: queue
//!   dispatch to links with credit, outcomes, redelivery, dead letters;
//! - [`driver`]: listeners and the per-connection task that feeds the engine from the socket
//!   and carries out its events against the broker; [`ended`]: why a connection ended,
//!   typed.
//!
//! Every message a client sends unsettled is appended to the log before it is accepted;
//! receivers read from the log; queue acknowledgements are a cursor in the store, so another
//! adapter on the same store redelivers what a dead one had not settled.

pub mod attach;
pub mod bridge;
pub mod broker;
pub mod driver;
pub mod ended;
pub mod engine;
pub mod frame;
pub mod message;

pub use driver::{Amqp, AmqpSettings};
