//! MQTT topic syntax, as resources use it (`spec.mqtt_topics`) and the adapters check what
//! clients send (`wharf_adapter_core::topic` re-exports these).

/// A topic filter a client may subscribe to [MQTT-4.7.1-2, 4.7.1-3]: `#` only alone as the last
/// level, `+` only as a whole level.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65_535 || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, level)| {
        let multi_ok = !level.contains('#') || (*level == "#" && i == levels.len() - 1);
        let single_ok = !level.contains('+') || *level == "+";
        multi_ok && single_ok
    })
}
