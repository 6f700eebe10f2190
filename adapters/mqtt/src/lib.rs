//! # wharf-mqtt
//!
//! Wharf's MQTT adapter (3.1.1 and 5.0 over TCP, TLS and WebSocket), on the shared layer of
//! `wharf-adapter-core` (addresses and topic claims, topic matching, names). In data-flow order:
//! - [`codec`]: `mqttbytes` for both versions, read into the MQTT 5 shape;
//! - [`message`]: a stored message and its record layout (a versioned contract);
//! - [`publish`]: storing publishes, routed by the addresses' topic claims;
//! - [`session`]: one connection's protocol state machine, without I/O — packets, durability
//!   results and stored messages in, [`session::Action`]s out;
//! - [`driver`]: listeners and the per-connection task that carries actions out against the
//!   log; with [`retained`], [`shared`] (shared subscription groups) and [`ws`]. Session
//!   takeover across adapters, wills published by a survivor when an adapter dies and the
//!   compaction of `mqtt-retained` are built on `wharf_adapter_core`'s `takeover`, `wills`
//!   and `keyed`; [`ended`]: why a connection ended, typed.
//!
//! Every publish is appended to the log before it is acknowledged; subscribers follow the log;
//! persistent sessions are cursors on it. So any adapter on the same store delivers what any
//! other stored, and resumes any session. `adapters/README.md` lists what is stored where,
//! what is measured and what is missing.

pub mod codec;
pub mod driver;
pub mod ended;
pub mod message;
pub mod publish;
pub mod retained;
pub mod session;
pub mod shared;
pub mod strict;
pub mod ws;

pub use driver::{Mqtt, MqttSettings, Transport, serve};
