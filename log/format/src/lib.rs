//! # wharf-log-format
//!
//! The bytes Wharf keeps on object storage, and nothing else: pure conversions between Rust
//! values and persisted objects. Every format here is a versioned contract (see
//! `log/README.md` for the object layout and `tests/fixtures/` for golden bytes).
//!
//! Main types:
//! - [`StreamId`], [`Offset`], [`Epoch`]: the identifiers that are part of what is persisted.
//! - [`Record`] / [`StoredRecord`]: one message as received, with its place in a stream.
//! - [`segment`]: a group-commit segment, an Arrow IPC file holding records of many streams.
//! - [`checkpoint::Checkpoint`]: the per-stream heads and segment index as of one segment.
//! - [`acks::AckSet`] and [`cursor::CursorState`]: a durable consumer position with
//!   per-message acknowledgement.
//! - [`lease::LeaseRecord`], [`catalog::CatalogEntry`]: leases and configuration objects.
//! - [`journal`]: the local filesystem's journal, where segments and batch objects are appended
//!   to a shared file instead of written as a file each.
//!
//! What it is not: it does no I/O, knows nothing of tokio or `object_store`, and has no
//! protocol (MQTT/AMQP) types; records carry protocol headers as opaque bytes.

pub mod acks;
pub mod catalog;
pub mod checkpoint;
pub mod cursor;
mod error;
mod ids;
pub mod journal;
pub mod json;
pub mod lease;
mod record;
pub mod segment;

pub use error::FormatError;
pub use ids::{Epoch, Offset, StreamId};
pub use record::{Record, StoredRecord};
