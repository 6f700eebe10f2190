//! # wharf-mqtt
//!
//! Wharf's MQTT adapter. Three layers, in data-flow order:
//! - [`topic`]: topic names and filters, matching with the `$` rule (pure);
//! - [`session`]: one connection's protocol state machine, without I/O — packets, durability
//!   results and stored messages in, [`session::Action`]s out;
//! - [`driver`]: the listener and the per-connection tokio task that owns the socket, decodes
//!   with `mqttbytes` and turns actions into log appends, tails and writes.
//!
//! Every publish is appended to the log before it is acknowledged (PUBACK / PUBREC after the
//! segment is durable); subscribers follow the log, so any adapter on the same store delivers
//! what any other stored.
//!
//! What it is not (yet): MQTT 5, persistent sessions, retained messages, wills, shared
//! subscriptions, TLS, WebSocket, credentials — see `adapters/README.md`.

pub mod codec;
pub mod driver;
pub mod message;
pub mod retained;
pub mod session;
pub mod takeover;
pub mod topic;
pub mod wills;
pub mod ws;

pub use driver::{Mqtt, MqttSettings, Transport, serve};
