//! What Wharf's protocol adapters share and no protocol owns.
//!
//! The adapters (`wharf-mqtt`, `wharf-amqp`) both depend on this crate and never on each
//! other; it depends only on the log. It has no protocol types.
//!
//! - [`claims`]: addresses from the catalog and the MQTT topics they claim — which stream a
//!   topic is stored in, and which streams a filter reaches — with a cache that follows the
//!   catalog, and where a reader starts on a stream it begins to follow late.
//! - [`topic`]: topic names and filters (MQTT syntax, which AMQP `/topic/...` addresses use
//!   too) and matching.
//! - [`record`]: which protocol stored a record (the first header byte, one table);
//!   [`bridge`]: a protocol-neutral message and the decoders that carry records across
//!   protocols, wired by the process and passed to each adapter.
//! - [`errors`]: the log's error kinds as what a client is told (reason strings, codes).
//! - [`names`]: every stream, cursor and lease name the adapters write under.
//! - [`takeover`]: the newest connection of a client id wins, on any adapter (the
//!   `mqtt-connects` stream).
//! - [`wills`]: wills of every protocol, registered durably and published by a surviving
//!   adapter when one dies; the adapter liveness lease that tells it.
//! - [`competing`]: competing consumers of streams across adapters (AMQP queues, MQTT shared
//!   subscriptions): a dispatcher without I/O and one task around it per consumer.
//! - [`following`]: one subscriber's reader of the streams its filters reach, following
//!   claims as they change, with a durable subscriber's cursors (MQTT sessions, AMQP topic
//!   receivers).
//! - [`runtime`]: the process's background tasks under one cancellation token, and the
//!   shutdown order they obey.
//! - [`keyed`]: latest-record-per-key state of a stream and its compaction by snapshot
//!   (`mqtt-wills`, `mqtt-retained`).

pub mod bridge;
pub mod claims;
pub mod competing;
pub mod errors;
pub mod following;
pub mod keyed;
pub mod metrics;
pub mod names;
pub mod quota;
pub mod record;
pub mod runtime;
pub mod takeover;
pub mod topic;
pub mod wills;
