//! MQTT topic names and filters: `wharf_resources::topic` (resources check the filters they
//! claim with the same code the adapters check clients' with).

pub use wharf_resources::topic::*;
