//! What an attach asks for, decided without I/O: the driver resolves the address it names
//! and carries the plan out (opening cursors, joining queues, starting subscriptions).
//!
//! - A **sender** (we receive) sends to the will address, a temporary address (dynamic
//!   target), a named address (capability `queue` or `topic` if created on first use), or
//!   anywhere (no address: the anonymous relay, `to` on each message).
//! - A **receiver** (we send) reads a queue as a competing consumer; a topic either as one
//!   of the links of a shared durable subscription (capability `shared`, durable terminus that
//!   never expires; `global`: shared across container ids; links named `name|2`, … are one
//!   subscription, as qpid-jms names them), which compete like a queue's, or on its own:
//!   durable (durable terminus that never expires: a cursor keyed by container id and link
//!   name) or not, from the end (a dynamic address from its start: it is new).

use fe2o3_amqp_types::{
    messaging::{Source, Target, TerminusDurability, TerminusExpiryPolicy},
    primitives::{Array, Symbol},
};

use crate::broker::{Kind, durable_name};

/// Where a sender's messages go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderPlan {
    /// The will address: the last message sent there is the connection's will.
    Will,
    /// A new temporary address (dynamic target).
    Temporary,
    /// A named address (created as `capability` on first use if the adapter allows).
    Named {
        address: String,
        capability: Option<Kind>,
    },
    /// No address: each message's `to` says where it goes.
    AnonymousRelay,
}

/// The address a receiver reads, before it is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourcePlan {
    Temporary,
    Named {
        address: String,
        capability: Option<Kind>,
    },
}

/// How a receiver reads its (resolved) address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverPlan {
    /// A queue's competing consumer.
    Queue,
    /// A link of the shared durable subscription whose cursor this is: links compete.
    SharedSubscription { cursor: String },
    /// A topic receiver of its own: `durable` names its cursor; `from_start`: read the
    /// address from its first record (a temporary address), else from its end.
    Topic {
        durable: Option<String>,
        from_start: bool,
    },
}

/// The will address (see `driver::WILL_ADDRESS`).
pub fn plan_sender(target: Option<&Target>, will_address: &str) -> SenderPlan {
    match target {
        Some(t) if t.address.as_deref() == Some(will_address) => SenderPlan::Will,
        Some(t) if t.dynamic => SenderPlan::Temporary,
        Some(Target {
            address: Some(address),
            capabilities,
            ..
        }) => SenderPlan::Named {
            address: address.clone(),
            capability: capability(capabilities.as_ref()),
        },
        _ => SenderPlan::AnonymousRelay,
    }
}

/// The address a receiver names; `Err` with what is missing.
pub fn plan_source(source: &Source) -> Result<SourcePlan, &'static str> {
    if source.dynamic {
        Ok(SourcePlan::Temporary)
    } else if let Some(address) = &source.address {
        Ok(SourcePlan::Named {
            address: address.clone(),
            capability: capability(source.capabilities.as_ref()),
        })
    } else {
        Err("a receiver needs a source address (or dynamic)")
    }
}

/// How a receiver on link `link` of container `container_id` reads an address of `kind`.
/// `filter`: the address is a `/topic/<filter>` spanning streams (shared subscriptions of
/// those are not supported: such a link reads as a topic receiver of its own).
pub fn plan_receiver(
    source: &Source,
    kind: Kind,
    filter: bool,
    container_id: &str,
    link: &str,
) -> ReceiverPlan {
    if kind == Kind::Queue {
        return ReceiverPlan::Queue;
    }
    if let Some(global) = shared_global(source)
        && !filter
    {
        let owner = if global { "" } else { container_id };
        return ReceiverPlan::SharedSubscription {
            cursor: durable_name(owner, base_name(link)),
        };
    }
    let durable = durable_terminus(source) && !source.dynamic;
    ReceiverPlan::Topic {
        durable: durable.then(|| durable_name(container_id, link)),
        from_start: source.dynamic,
    }
}

/// The address kind a link's capabilities ask for (`topic` wins over `queue`).
fn capability(caps: Option<&Array<Symbol>>) -> Option<Kind> {
    let caps = caps?;
    if caps.0.iter().any(|c| c.0 == "topic") {
        Some(Kind::Topic)
    } else if caps.0.iter().any(|c| c.0 == "queue") {
        Some(Kind::Queue)
    } else {
        None
    }
}

/// A durable terminus that never expires (AMQP 1.0 §3.5.3).
fn durable_terminus(source: &Source) -> bool {
    source.durable != TerminusDurability::None
        && source.expiry_policy == TerminusExpiryPolicy::Never
}

/// For a shared durable subscription (capability `shared`, durable, never expiring): whether
/// it is `global` (shared across container ids).
fn shared_global(source: &Source) -> Option<bool> {
    let caps = source.capabilities.as_ref()?;
    let has = |c: &str| caps.0.iter().any(|s| s.0 == c);
    (durable_terminus(source) && has("shared")).then(|| has("global"))
}

/// The subscription name of a shared subscription's link: the link name up to `|` (qpid-jms
/// names the links of one subscription `name`, `name|2`, … or `name|global`, …).
fn base_name(link: &str) -> &str {
    link.split('|').next().unwrap_or(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(c: &[&str]) -> Option<Array<Symbol>> {
        Some(Array(c.iter().map(|s| Symbol::from(*s)).collect()))
    }

    fn source(address: &str, c: &[&str], durable: bool) -> Source {
        let mut s = Source::builder().address(address.to_string()).build();
        s.capabilities = caps(c);
        if durable {
            s.durable = TerminusDurability::UnsettledState;
            s.expiry_policy = TerminusExpiryPolicy::Never;
        }
        s
    }

    #[test]
    fn senders() {
        assert_eq!(plan_sender(None, "$will"), SenderPlan::AnonymousRelay);
        let mut t = Target::builder().address("$will".to_string()).build();
        assert_eq!(plan_sender(Some(&t), "$will"), SenderPlan::Will);
        t.address = Some("jobs".into());
        t.capabilities = caps(&["queue"]);
        assert_eq!(
            plan_sender(Some(&t), "$will"),
            SenderPlan::Named {
                address: "jobs".into(),
                capability: Some(Kind::Queue)
            }
        );
        t.capabilities = caps(&["queue", "topic"]);
        assert!(matches!(
            plan_sender(Some(&t), "$will"),
            SenderPlan::Named {
                capability: Some(Kind::Topic),
                ..
            }
        ));
        t.dynamic = true;
        t.address = None;
        assert_eq!(plan_sender(Some(&t), "$will"), SenderPlan::Temporary);
    }

    #[test]
    fn sources() {
        let mut s = Source::builder().build();
        assert!(plan_source(&s).is_err());
        s.dynamic = true;
        assert_eq!(plan_source(&s), Ok(SourcePlan::Temporary));
        let s = source("news", &["topic"], false);
        assert_eq!(
            plan_source(&s),
            Ok(SourcePlan::Named {
                address: "news".into(),
                capability: Some(Kind::Topic)
            })
        );
    }

    #[test]
    fn receivers() {
        let plain = source("news", &[], false);
        assert_eq!(
            plan_receiver(&plain, Kind::Queue, false, "c1", "l"),
            ReceiverPlan::Queue
        );
        assert_eq!(
            plan_receiver(&plain, Kind::Topic, false, "c1", "l"),
            ReceiverPlan::Topic {
                durable: None,
                from_start: false
            }
        );
        // Durable: keyed by container id and link name.
        let durable = source("news", &[], true);
        assert_eq!(
            plan_receiver(&durable, Kind::Topic, false, "c1", "sub"),
            ReceiverPlan::Topic {
                durable: Some(durable_name("c1", "sub")),
                from_start: false
            }
        );
        // Durable but expiring with the link: not a durable subscription.
        let mut expiring = durable.clone();
        expiring.expiry_policy = TerminusExpiryPolicy::LinkDetach;
        assert!(matches!(
            plan_receiver(&expiring, Kind::Topic, false, "c1", "sub"),
            ReceiverPlan::Topic { durable: None, .. }
        ));
        // Shared: links `sub` and `sub|2` of one container are one subscription; global ones
        // are one across containers.
        let shared = source("news", &["shared"], true);
        let a = plan_receiver(&shared, Kind::Topic, false, "c1", "sub");
        assert_eq!(a, plan_receiver(&shared, Kind::Topic, false, "c1", "sub|2"));
        assert_ne!(a, plan_receiver(&shared, Kind::Topic, false, "c2", "sub"));
        let global = source("news", &["shared", "global"], true);
        assert_eq!(
            plan_receiver(&global, Kind::Topic, false, "c1", "sub|global"),
            plan_receiver(&global, Kind::Topic, false, "c2", "sub|global2")
        );
        // A shared subscription needs a durable terminus; `/topic/<filter>` reads alone.
        assert!(matches!(
            plan_receiver(
                &source("news", &["shared"], false),
                Kind::Topic,
                false,
                "c1",
                "s"
            ),
            ReceiverPlan::Topic { durable: None, .. }
        ));
        assert!(matches!(
            plan_receiver(&shared, Kind::Topic, true, "c1", "s"),
            ReceiverPlan::Topic {
                durable: Some(_),
                ..
            }
        ));
        // A dynamic (temporary) address is read from its start, never durably.
        let mut dynamic = durable.clone();
        dynamic.dynamic = true;
        assert_eq!(
            plan_receiver(&dynamic, Kind::Topic, false, "c1", "l"),
            ReceiverPlan::Topic {
                durable: None,
                from_start: true
            }
        );
    }
}
