//! The `Following` reader on an in-memory log: streams read in turn with stable positions,
//! a durable subscriber's acknowledgements, its takeover by a newer holder, and the streams a
//! filter reaches through address claims.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;
use wharf_adapter_core::{
    claims::{self, Claims},
    following::{Following, TakenOver},
    names::default_stream,
};
use wharf_log::{Log, Store, pack_position as pack};
use wharf_log_format::{Offset, Record, StreamId};

async fn memory_log() -> Log {
    Log::open(Store::open("memory://").expect("store"))
        .await
        .expect("log")
}

fn sensors_claim() -> Arc<Claims> {
    let resource = json!({"apiVersion": "wharf/v1", "kind": "Address", "metadata": {"name": "sensors"},
                          "spec": {"type": "topic", "mqtt_topics": ["sensors/#"]}});
    Arc::new(Claims::from_claims(
        claims::parse("sensors", &resource).expect("claims"),
    ))
}

async fn append(log: &Log, stream: &StreamId, payloads: &[&'static str]) {
    let records = payloads
        .iter()
        .map(|p| Record::new(1, Bytes::from_static(p.as_bytes())))
        .collect();
    log.append_many(stream, records).await.expect("append");
}

#[tokio::test]
async fn follows_what_the_filters_reach_and_keeps_a_durable_position() {
    let log = memory_log().await;
    let sensors = StreamId::new("sensors").expect("id");
    append(&log, &default_stream(), &["old"]).await;
    append(&log, &sensors, &["old"]).await;

    let mut f: Following<u8> = Following::new(&log, sensors_claim());
    let durable = log
        .cursor_from(&default_stream(), "sub", Offset(1))
        .await
        .expect("cursor");
    assert_eq!(f.follow(default_stream(), Offset(1), Some(durable), 7), 0);
    assert!(f.is_durable());
    assert!(!f.claims_changed());
    // `#` reaches the sensors address too; a subscription made now starts at its end.
    let reached = f.newly_reached(["#", "sensors/+"], false).await;
    assert_eq!(reached, vec![(sensors.clone(), Offset(1))]);
    let c = log
        .cursor_from(&sensors, "sub", Offset(1))
        .await
        .expect("cursor");
    assert_eq!(f.follow(sensors.clone(), Offset(1), Some(c), 8), 1);
    assert!(
        f.newly_reached(["#"], false).await.is_empty(),
        "followed already"
    );
    assert_eq!(f.streams()[1].extra, 8);

    append(&log, &default_stream(), &["a", "b"]).await;
    append(&log, &sensors, &["s"]).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let (i, batch) = f.next_batch(10).await.expect("read");
        for r in batch {
            got.push((i, r.offset.0, r.record.payload));
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            (0, 1, Bytes::from_static(b"a")),
            (0, 2, Bytes::from_static(b"b")),
            (1, 1, Bytes::from_static(b"s")),
        ]
    );

    // Acknowledged by position, committed, and seen by the next holder.
    f.ack(pack(0, 1));
    f.ack(pack(1, 1));
    assert!(f.is_dirty());
    f.commit().await.expect("commit");
    assert!(!f.is_dirty());
    assert!(f.is_acked(0, Offset(1)) && !f.is_acked(0, Offset(2)));
    let mut newer = log.cursor(&default_stream(), "sub").await.expect("cursor");
    assert!(newer.is_acked(Offset(1)) && !newer.is_acked(Offset(2)));

    // A newer holder takes the subscription: this one's next commit is fenced and it stops
    // being durable.
    newer.take_over().await.expect("take over");
    f.ack(pack(0, 2));
    assert_eq!(f.commit().await, Err(TakenOver));
    assert!(!f.is_durable());
    let back = log.cursor(&default_stream(), "sub").await.expect("cursor");
    assert!(
        !back.is_acked(Offset(2)),
        "the fenced holder's ack was not stored"
    );
}
