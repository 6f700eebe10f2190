//! Property tests: any resource round-trips through JSON, YAML and the catalog; its JSON Schema
//! accepts every valid resource, and refuses the invalid ones the validator refuses (those a
//! schema can express: ranges, types, enumerations, required fields).

use proptest::prelude::*;
use serde_json::{Value, json};
use wharf_resources::{
    Action, Address, AddressSpec, AddressType, Any, Catalogs, Limits, Permission, Plan, PlanSpec,
    Resource, Spec, Tenant, TenantSpec, User, UserSpec, plan::AddressDefaults,
};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG";

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,20}"
}

fn tenant() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,10}"
}

fn duration() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("7d"),
        Just("12h"),
        Just("30m"),
        Just("45s"),
        Just("1h 30m")
    ]
    .prop_map(String::from)
}

fn filter() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a/#"),
        Just("b/+/c"),
        Just("d"),
        Just("e/f"),
        Just("+/g")
    ]
    .prop_map(String::from)
}

fn address_type() -> impl Strategy<Value = AddressType> {
    prop_oneof![
        Just(AddressType::Queue),
        Just(AddressType::Topic),
        Just(AddressType::Anycast),
        Just(AddressType::Multicast),
        Just(AddressType::Subscription),
    ]
}

fn address_spec() -> impl Strategy<Value = AddressSpec> {
    (
        proptest::option::of(address_type()),
        proptest::option::of(name()),
        proptest::option::of(1u32..1000),
        proptest::option::of(name()),
        proptest::option::of(duration()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(duration()),
        proptest::option::of(proptest::collection::vec(filter(), 1..3)),
    )
        .prop_map(
            |(
                kind,
                plan,
                max_delivery,
                dead_letter,
                retention,
                retention_bytes,
                ttl,
                mqtt_topics,
            )| {
                AddressSpec {
                    kind,
                    plan,
                    max_delivery,
                    dead_letter,
                    retention,
                    retention_bytes,
                    ttl,
                    mqtt_topics,
                }
            },
        )
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        proptest::option::of(any::<u32>()),
        proptest::option::of(1u64..u64::MAX),
        proptest::option::of(1u32..u32::MAX),
        proptest::option::of(1u64..u64::MAX),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(
                max_connections,
                max_message_bytes,
                max_messages_per_second,
                max_storage_bytes,
                max_addresses,
            )| {
                Limits {
                    max_connections,
                    max_message_bytes,
                    max_messages_per_second,
                    max_storage_bytes,
                    max_addresses,
                }
            },
        )
}

fn plan_spec() -> impl Strategy<Value = PlanSpec> {
    (
        limits(),
        proptest::option::of(duration()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(duration()),
        proptest::option::of(1u32..100),
        proptest::option::of(0u32..4000),
    )
        .prop_map(
            |(limits, retention, retention_bytes, ttl, max_delivery, credit)| PlanSpec {
                limits,
                address_defaults: AddressDefaults {
                    retention,
                    retention_bytes,
                    ttl,
                    max_delivery,
                },
                credit: credit.map(|c| f64::from(c) / 100.0),
            },
        )
}

fn tenant_spec() -> impl Strategy<Value = TenantSpec> {
    (proptest::option::of(name()), limits()).prop_map(|(plan, limits)| TenantSpec { plan, limits })
}

fn permission() -> impl Strategy<Value = Permission> {
    (
        proptest::collection::vec("[a-z*/.#+]{1,12}", 1..3),
        proptest::sample::subsequence(vec![Action::Send, Action::Receive, Action::Manage], 1..=3),
    )
        .prop_map(|(addresses, actions)| Permission { addresses, actions })
}

fn user_spec() -> impl Strategy<Value = UserSpec> {
    (
        proptest::option::of(tenant()),
        proptest::option::of(proptest::collection::vec(permission(), 0..3)),
    )
        .prop_map(|(tenant, permissions)| UserSpec {
            tenant,
            password_hash: HASH.into(),
            permissions,
        })
}

fn resource<S: Spec>(
    spec: impl Strategy<Value = S>,
    in_tenant: bool,
) -> impl Strategy<Value = Resource<S>> {
    (name(), proptest::option::of(tenant()), spec).prop_map(move |(name, tenant, spec)| {
        let mut r = Resource::new(name, spec);
        if in_tenant {
            r.metadata.tenant = tenant;
        }
        r
    })
}

fn any_resource() -> impl Strategy<Value = Any> {
    prop_oneof![
        resource(address_spec(), true).prop_map(Any::Address),
        resource(plan_spec(), false).prop_map(Any::Plan),
        resource(tenant_spec(), false)
            .prop_filter("tenant names are DNS labels", |t| {
                wharf_log_format::catalog::valid_tenant(&t.metadata.name)
            })
            .prop_map(Any::Tenant),
        resource(user_spec(), false).prop_map(Any::User),
    ]
}

fn schema_of(kind: &str) -> Value {
    match kind {
        "Address" => Address::json_schema(),
        "Plan" => Plan::json_schema(),
        "Tenant" => Tenant::json_schema(),
        _ => User::json_schema(),
    }
}

fn schema_accepts(kind: &str, value: &Value) -> bool {
    let schema = schema_of(kind);
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    validator.is_valid(value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn resources_round_trip_through_json_and_yaml(r in any_resource()) {
        let value = r.to_json();
        prop_assert_eq!(&Any::from_json(&value).expect("valid"), &r);
        let text = serde_json::to_string(&value).expect("json");
        let back: Value = serde_json::from_str(&text).expect("parses");
        prop_assert_eq!(&Any::from_json(&back).expect("valid"), &r);
        let yaml = serde_yaml_ng::to_string(&value).expect("yaml");
        let back: Value = serde_yaml_ng::from_str(&yaml).expect("parses");
        prop_assert_eq!(&Any::from_json(&back).expect("valid"), &r, "{}", yaml);
    }

    #[test]
    fn the_schema_accepts_every_valid_resource(r in any_resource()) {
        let value = r.to_json();
        prop_assert!(schema_accepts(r.kind(), &value), "{} refused by its schema", value);
    }

    #[test]
    fn the_schema_refuses_what_the_validator_refuses(r in any_resource(), pick in 0usize..4) {
        let mut value = r.to_json();
        let breaks: Vec<(&str, Value)> = match r.kind() {
            "Address" => vec![("/spec/max_delivery", json!(0)), ("/spec/type", json!("fifo")),
                              ("/spec/max_delivery", json!("5")), ("/spec/retention_bytes", json!(-1))],
            "Plan" => vec![("/spec/credit", json!(-1.0)), ("/spec/limits/max_message_bytes", json!(0)),
                           ("/spec/limits/max_connections", json!("many")), ("/spec/address_defaults/max_delivery", json!(0))],
            "Tenant" => vec![("/spec/plan", json!(7)), ("/spec/limits/max_storage_bytes", json!(0)),
                             ("/spec/limits/max_connections", json!(-1)), ("/metadata/name", json!(null))],
            _ => vec![("/spec/permissions", json!([{"addresses": ["*"], "actions": ["publish"]}])),
                      ("/spec/password_hash", json!(null)), ("/spec/tenant", json!(3)),
                      ("/spec/permissions", json!("all"))],
        };
        let (path, bad) = &breaks[pick];
        let (parent, field) = path.rsplit_once('/').expect("a path");
        let target = if parent.is_empty() { Some(&mut value) } else { value.pointer_mut(parent) };
        match target {
            Some(Value::Object(o)) => { o.insert(field.to_string(), bad.clone()); }
            _ => {
                // The parent is absent (an empty part of the spec is left out): make it.
                let spec = value["spec"].as_object_mut().expect("spec");
                let mut inner = serde_json::Map::new();
                inner.insert(field.to_string(), bad.clone());
                let key = parent.trim_start_matches("/spec/");
                spec.insert(key.to_string(), Value::Object(inner));
            }
        }
        prop_assert!(Any::from_json(&value).is_err(), "the validator took {}", value);
        prop_assert!(!schema_accepts(r.kind(), &value), "the schema took {}", value);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn resources_round_trip_through_the_catalog(r in any_resource()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let back = runtime.block_on(async {
            let log = wharf_log::Log::open(wharf_log::Store::open("memory://").expect("store")).await.expect("log");
            let catalogs = Catalogs::new(log);
            let generation = catalogs.apply(&r, "default", None).await.expect("applied");
            let tenant = r.metadata().tenant.clone().unwrap_or_else(|| "default".into());
            let stored = catalogs.get(r.kind(), &tenant, r.name()).await.expect("read").expect("there");
            assert_eq!(stored.generation, generation);
            let mut value = stored.resource;
            // What the catalog adds on the way out: the generation, and an address's tenant.
            value["metadata"].as_object_mut().expect("metadata").remove("generation");
            if r.kind() == "Address" && r.metadata().tenant.is_none() {
                value["metadata"].as_object_mut().expect("metadata").remove("tenant");
            }
            Any::from_json(&value).expect("valid")
        });
        prop_assert_eq!(back, r);
    }
}
