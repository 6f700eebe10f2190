//! Configured addresses that claim MQTT topics.
//!
//! Every topic lives in the default topic address (`mqtt-default`) unless an Address resource
//! in the catalog claims it with `spec.mqtt_topics` (a list of topic filters): then publishes
//! to a matching topic are stored in that address's stream — a topic address serves them to
//! MQTT subscribers and AMQP receivers alike, a queue hands each to one consumer. Subscribers
//! follow every stream their filters can match.
//!
//! Claims must not overlap (`wharf address apply` refuses that, naming both addresses); if the
//! catalog holds overlapping claims anyway, the address whose name sorts first wins, the same
//! on every adapter.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::runtime::Background;
use serde_json::Value;
use wharf_log::{CatalogEvent, Log};
use wharf_log_format::StreamId;
use wharf_resources::{AddressSpec, AddressType};

use crate::topic;

/// One topic filter claimed by an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The address's name (its catalog name, which is also its stream's name).
    pub address: String,
    pub filter: String,
    pub stream: StreamId,
    /// A queue: each message to one consumer; MQTT subscriptions within it are refused.
    pub queue: bool,
}

/// The claims of an Address resource (`name`, its catalog name): none without
/// `spec.mqtt_topics`; an error naming the field if the spec is malformed (parsed by
/// `wharf_resources`, the one place resources are checked).
pub fn parse(name: &str, resource: &Value) -> Result<Vec<Claim>, String> {
    let spec = AddressSpec::of(resource).map_err(|e| format!("address {name}: {e}"))?;
    let Some(topics) = &spec.mqtt_topics else {
        return Ok(Vec::new());
    };
    let stream = StreamId::new(name)
        .map_err(|_| format!("address {name:?} cannot claim topics: not a stream name"))?;
    // A queue (and an anycast address): each message to one consumer, so MQTT
    // subscriptions within it are refused; topics, multicast and subscriptions fan out.
    let queue = matches!(spec.kind(), AddressType::Queue | AddressType::Anycast);
    Ok(topics
        .iter()
        .map(|filter| Claim {
            address: name.to_string(),
            filter: filter.clone(),
            stream: stream.clone(),
            queue,
        })
        .collect())
}

/// The first pair of claims of different addresses that overlap (some topic matches both).
pub fn first_overlap(claims: &[Claim]) -> Option<(&Claim, &Claim)> {
    claims.iter().enumerate().find_map(|(i, a)| {
        claims[i + 1..]
            .iter()
            .find(|b| b.address != a.address && topic::overlap(&a.filter, &b.filter))
            .map(|b| (a, b))
    })
}

/// The claim among `claims` (sorted, as [`Claims::current`] gives them) that a publish to
/// `topic_name` goes to (`None`: the default topic address).
pub fn claim_of<'a>(claims: &'a [Claim], topic_name: &str) -> Option<&'a Claim> {
    claims
        .iter()
        .find(|c| topic::matches(&c.filter, topic_name))
}

/// Claims in the order lookups take them (by address name: the first wins an overlap, the
/// same on every adapter).
fn sorted(mut claims: Vec<Claim>) -> Arc<Vec<Claim>> {
    claims.sort_by(|a, b| (&a.address, &a.filter).cmp(&(&b.address, &b.filter)));
    Arc::new(claims)
}

/// Which streams a subscription filter reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    /// The default topic address (unless one claim covers the whole filter).
    pub default: bool,
    /// Topic addresses whose claims overlap the filter.
    pub streams: Vec<StreamId>,
    /// A queue that claims every topic the filter matches: such a subscription would get
    /// nothing.
    pub queue: Option<String>,
}

impl Reach {
    /// The streams to read: the default topic address's first (if reached), then the topic
    /// addresses'.
    pub fn all_streams(self) -> Vec<StreamId> {
        self.default
            .then(crate::names::default_stream)
            .into_iter()
            .chain(self.streams)
            .collect()
    }
}

/// How often the claims of a tenant with no client on this adapter are looked at.
pub const IDLE_REFRESH: Duration = Duration::from_secs(30);

/// Where a reader starts on `stream` when it follows it because a claim appeared after it
/// subscribed: [`CLAIM_GRACE`] back from now (what was routed there while this adapter had
/// not seen the claim yet), the stream's end if nothing is that recent.
pub async fn late_start(log: &Log, stream: &StreamId) -> u64 {
    let head = log.stream(stream).map_or(0, |s| s.next_offset);
    let since = log.clock().now_ms() - CLAIM_GRACE.as_millis() as i64;
    match log.offset_for_time(stream, since).await {
        Ok(Some(o)) => o.0.min(head),
        _ => head,
    }
}

/// The claims in force on this adapter, kept up to date from the catalog.
#[derive(Debug, Default)]
pub struct Claims {
    claims: RwLock<Arc<Vec<Claim>>>,
    /// Bumped on every change: subscribers compare it to notice new claims.
    generation: std::sync::atomic::AtomicU64,
}

/// How far back a subscriber reads an address stream it starts following because a claim
/// appeared after it subscribed: covers the time adapters take to see the claim (one catalog
/// poll each) and to route publishes there.
pub const CLAIM_GRACE: Duration = Duration::from_secs(10);

impl Claims {
    /// Claims from these resources (tests, tools).
    pub fn from_claims(claims: Vec<Claim>) -> Self {
        Self {
            claims: RwLock::new(sorted(claims)),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The claims in force now (one snapshot serves a batch of lookups: [`claim_of`]).
    pub fn current(&self) -> Arc<Vec<Claim>> {
        self.claims
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, claims: Vec<Claim>) {
        let sorted = sorted(claims);
        match self.claims.write() {
            Ok(mut c) => *c = sorted,
            Err(p) => *p.into_inner() = sorted,
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes so far (compare two readings to see whether the claims changed).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The streams a subscription to `filter` must follow.
    pub fn reach(&self, filter: &str) -> Reach {
        let claims = self.current();
        let mut reach = Reach {
            default: true,
            ..Reach::default()
        };
        for c in claims.iter() {
            if !topic::overlap(&c.filter, filter) {
                continue;
            }
            if topic::covers(&c.filter, filter) {
                reach.default = false;
                if c.queue {
                    reach.queue = Some(c.address.clone());
                }
            }
            if !c.queue && !reach.streams.contains(&c.stream) {
                reach.streams.push(c.stream.clone());
            }
        }
        reach
    }

    /// Load the claims of every Address in the catalog, then keep them current (one catalog
    /// LIST every `every` while the log has clients here, every [`IDLE_REFRESH`] and when the
    /// first one connects while it has none) until the log closes.
    pub async fn follow(
        self: &Arc<Self>,
        log: &Log,
        every: Duration,
        background: &Background,
    ) -> wharf_log::Result<()> {
        let mut watch = log.catalog().watch("Address");
        let mut by_address = std::collections::BTreeMap::new();
        let mut apply = move |events: Vec<CatalogEvent>, claims: &Claims| {
            if events.is_empty() {
                return;
            }
            for e in events {
                match e {
                    CatalogEvent::Put(entry) => match parse(&entry.name, &entry.body) {
                        Ok(c) => {
                            by_address.insert(entry.name, c);
                        }
                        Err(why) => {
                            tracing::warn!(address = entry.name, why, "topic claims ignored");
                            by_address.remove(&entry.name);
                        }
                    },
                    CatalogEvent::Deleted { name, .. } => {
                        by_address.remove(&name);
                    }
                }
            }
            let all: Vec<Claim> = by_address.values().flatten().cloned().collect();
            if let Some((a, b)) = first_overlap(&all) {
                tracing::warn!(
                    first = a.address,
                    second = b.address,
                    "addresses claim overlapping MQTT topics ({} and {}); the first wins",
                    a.filter,
                    b.filter
                );
            }
            tracing::info!(claims = all.len(), "MQTT topic claims loaded");
            claims.set(all);
        };
        apply(watch.poll().await?, self);
        let claims = self.clone();
        let mut clients = log.clients();
        let cancelled = background.cancelled();
        background.spawn(async move {
            tokio::pin!(cancelled);
            loop {
                // While no client of the tenant is connected here, nothing here routes by
                // the claims: look every IDLE_REFRESH, and at once when a client arrives.
                let idle = *clients.borrow_and_update() == 0;
                let pause = if idle { IDLE_REFRESH.max(every) } else { every };
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = clients.wait_for(|n| *n > 0), if idle => {}
                    () = &mut cancelled => return,
                }
                match watch.poll().await {
                    Ok(events) => apply(events, &claims),
                    Err(e) if e.kind() == wharf_log::ErrorKind::Closed => return,
                    Err(e) => tracing::warn!(error = %e, "could not refresh topic claims"),
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resource(kind: &str, topics: Value) -> Value {
        json!({"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "x"},
               "spec": {"type": kind, "mqtt_topics": topics}})
    }

    #[test]
    fn parse_names_the_field() {
        let c = parse("sensors", &resource("topic", json!(["sensors/#"]))).expect("valid");
        assert_eq!(c.len(), 1);
        assert!(!c[0].queue);
        assert!(parse("jobs", &resource("queue", json!(["jobs/+"]))).expect("valid")[0].queue);
        for bad in [
            json!("sensors/#"),
            json!(["a/#/b"]),
            json!([3]),
            json!(["$share/g/a"]),
        ] {
            let e = parse("s", &resource("topic", bad)).expect_err("invalid");
            assert!(e.contains("spec.mqtt_topics"), "{e}");
        }
        assert!(
            parse("s", &json!({"spec": {"type": "topic"}}))
                .expect("no claims")
                .is_empty()
        );
    }

    #[test]
    fn routes_and_reach() {
        let mut all = parse("sensors", &resource("topic", json!(["sensors/#"]))).expect("ok");
        all.extend(parse("jobs", &resource("queue", json!(["jobs/+"]))).expect("ok"));
        assert!(first_overlap(&all).is_none());
        let claims = Claims::from_claims(all);
        let route = |t: &str| claim_of(&claims.current(), t).cloned();
        assert_eq!(
            route("sensors/a/t").map(|c| c.address),
            Some("sensors".into())
        );
        assert_eq!(route("jobs/1").map(|c| c.address), Some("jobs".into()));
        assert_eq!(route("jobs/1/x"), None);
        assert_eq!(route("other"), None);

        let r = claims.reach("sensors/+/t");
        assert!(!r.default && r.queue.is_none());
        assert_eq!(r.streams.len(), 1);
        let r = claims.reach("#");
        assert!(r.default && r.queue.is_none());
        assert_eq!(r.streams.len(), 1, "queues are not followed");
        let r = claims.reach("jobs/+");
        assert_eq!(r.queue.as_deref(), Some("jobs"));
        assert!(!r.default);
        assert!(claims.reach("jobs/#").default, "jobs/a/b is not claimed");
    }

    #[test]
    fn overlapping_claims_are_found() {
        let mut all = parse("a", &resource("topic", json!(["x/#"]))).expect("ok");
        all.extend(parse("b", &resource("topic", json!(["+/y"]))).expect("ok"));
        let (a, b) = first_overlap(&all).expect("overlap");
        assert_eq!((a.address.as_str(), b.address.as_str()), ("a", "b"));
    }
}
