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
//! - [`names`]: the stream and cursor names the adapters write under, in one place.

pub mod claims;
pub mod names;
pub mod topic;
