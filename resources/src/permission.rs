//! What a user may do: `send`, `receive` or `manage`, on addresses and topics whose names
//! match a pattern.
//!
//! A pattern is a name where `*` stands for any run of characters, `/` included: `orders`,
//! `orders.*`, `sensors/*`, `*`. It is matched against
//! - an AMQP address as the client names it (`orders`, `/topic/sensors/1`, with a leading
//!   `/topic/` or `topic://` taken off: `sensors/1`);
//! - an MQTT topic a client publishes to (`sensors/1`), and a topic filter it subscribes to
//!   as written (`sensors/#` matches `sensors/*`; `#` alone needs `*`): a subscription is
//!   allowed only where the user may receive everything its filter can match, as far as the
//!   pattern's text can tell;
//! - for `manage`, the names of the resources the user may change through the management
//!   API (`*`: everything in the user's tenant).
//!
//! A user with no `permissions` listed may send and receive everywhere in its tenant (so
//! users seeded from a users file work as before); an empty list allows nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Invalid;

/// One grant: these actions on names matching any of these patterns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Permission {
    /// Name patterns (`*` = any run of characters).
    pub addresses: Vec<String>,
    pub actions: Vec<Action>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Publish (MQTT) or attach a sender (AMQP).
    Send,
    /// Subscribe (MQTT) or attach a receiver (AMQP).
    Receive,
    /// Create, change and delete resources of the tenant through the management API.
    Manage,
}

impl Permission {
    /// Whether this grant allows `action` on `name`.
    pub fn allows(&self, action: Action, name: &str) -> bool {
        self.actions.contains(&action) && self.addresses.iter().any(|p| matches(p, name))
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), Invalid> {
        if self.addresses.is_empty() {
            return Err(Invalid::new(
                format!("{field}.addresses"),
                "lists no pattern (use \"*\" for every address)",
            ));
        }
        for (i, p) in self.addresses.iter().enumerate() {
            if p.is_empty() || p.len() > 1024 || p.contains('\0') {
                return Err(Invalid::new(
                    format!("{field}.addresses[{i}]"),
                    format!("{p:?} is not a pattern (1-1024 characters, `*` for any run)"),
                ));
            }
        }
        if self.actions.is_empty() {
            return Err(Invalid::new(
                format!("{field}.actions"),
                "lists no action (send, receive, manage)",
            ));
        }
        Ok(())
    }
}

/// What a set of grants allows; `None` (no list) allows send and receive everywhere.
pub fn allowed(permissions: Option<&[Permission]>, action: Action, name: &str) -> bool {
    match permissions {
        None => action != Action::Manage,
        Some(list) => list.iter().any(|p| p.allows(action, name)),
    }
}

/// The name a pattern is matched against for an AMQP address: `/topic/x` and `topic://x` as
/// `x`, so that one pattern covers an MQTT topic and the AMQP address of the same topic.
pub fn amqp_name(address: &str) -> &str {
    address
        .strip_prefix("/topic/")
        .or_else(|| address.strip_prefix("topic://"))
        .unwrap_or(address)
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patterns_match_as_documented() {
        assert!(matches("*", "anything/at/all"));
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.eu"));
        assert!(matches("orders.*", "orders.eu"));
        assert!(matches("orders.*", "orders."));
        assert!(!matches("orders.*", "orders"));
        assert!(matches("sensors/*", "sensors/1/temp"));
        assert!(matches("sensors/*", "sensors/#"));
        assert!(!matches("sensors/*", "#"));
        assert!(matches("a*b*c", "aXbYc"));
        assert!(matches("a*b*c", "abc"));
        assert!(!matches("a*b*c", "acb"));
        assert!(!matches("ab*ba", "aba"), "the two ends must not overlap");
    }

    #[test]
    fn no_list_allows_messaging_but_not_managing() {
        assert!(allowed(None, Action::Send, "x"));
        assert!(allowed(None, Action::Receive, "x"));
        assert!(!allowed(None, Action::Manage, "x"));
        assert!(!allowed(Some(&[]), Action::Send, "x"));
        let grants = [Permission {
            addresses: vec!["sensors/*".into()],
            actions: vec![Action::Send],
        }];
        assert!(allowed(Some(&grants), Action::Send, "sensors/1"));
        assert!(!allowed(Some(&grants), Action::Receive, "sensors/1"));
        assert!(!allowed(Some(&grants), Action::Send, "orders"));
        assert_eq!(amqp_name("/topic/sensors/1"), "sensors/1");
        assert_eq!(amqp_name("topic://sensors/1"), "sensors/1");
        assert_eq!(amqp_name("orders"), "orders");
    }

    proptest! {
        /// A pattern with no `*` matches only itself; `*` around any text matches what holds it.
        #[test]
        fn stars_match_what_they_surround(prefix in "[a-z/]{0,6}", middle in "[a-z/#+]{0,6}", suffix in "[a-z/]{0,6}") {
            let name = [prefix.as_str(), middle.as_str(), suffix.as_str()].concat();
            prop_assert!(matches(&name, &name));
            let around = [prefix.as_str(), "*", suffix.as_str()].concat();
            prop_assert!(matches(&around, &name));
            let inside = ["*", middle.as_str(), "*"].concat();
            prop_assert!(matches(&inside, &name));
            prop_assert!(matches("*", &name));
        }
    }
}
