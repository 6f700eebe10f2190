//! MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7).
//!
//! Our own rather than mqttbytes' helpers: those refuse every `$` topic even for an explicit
//! `$SYS/#` filter and accept `+` inside a level (`a+/b`).

/// A topic name a client may publish to [MQTT-4.7.1-1, 4.7.3-1, 4.7.3-2]: at least one
/// character, no wildcards, no NUL, at most 65535 bytes.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

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

/// Whether `topic` matches `filter` (both assumed valid). A filter starting with a wildcard
/// does not match topics starting with `$` [MQTT-4.7.2-1]; `a/#` matches `a` [MQTT-4.7.1-2].
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match t.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn spec_examples() {
        // §4.7.1.2
        for t in [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ] {
            assert!(matches("sport/tennis/player1/#", t), "{t}");
        }
        assert!(matches("sport/#", "sport"));
        // §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        // §4.7.2
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn validity() {
        for ok in ["#", "+", "a/#", "+/b/+", "/", "a//b", "$SYS/#"] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+", "a/+b/c", "#/a", "a\0b"] {
            assert!(!valid_filter(bad), "{bad:?}");
        }
        assert!(valid_topic_name("a/b"));
        for bad in ["", "a/+", "a/#", "a\0"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn exact_filters_match_only_themselves(t in "[a-c/]{1,8}", u in "[a-c/]{1,8}") {
            prop_assert_eq!(matches(&t, &u), t == u);
        }

        #[test]
        fn hash_matches_everything_not_dollar(t in "[a-c$/]{1,8}") {
            prop_assert_eq!(matches("#", &t), !t.starts_with('$'));
        }

        #[test]
        fn plus_replaces_one_level(levels in proptest::collection::vec("[a-c]{0,3}", 1..5), i in 0usize..5) {
            let topic = levels.join("/");
            let i = i % levels.len();
            let mut f = levels.clone();
            f[i] = "+".into();
            prop_assert!(matches(&f.join("/"), &topic));
            let mut longer = levels.clone();
            longer.push("x".into());
            prop_assert!(!matches(&f.join("/"), &longer.join("/")));
        }
    }
}
