//! MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7).
//!
//! Our own rather than mqttbytes' helpers: those refuse every `$` topic even for an explicit
//! `$SYS/#` filter and accept `+` inside a level (`a+/b`).

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

/// A topic name a client may publish to [MQTT-4.7.1-1, 4.7.3-1, 4.7.3-2]: at least one
/// character, no wildcards, no NUL, at most 65535 bytes.
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
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

/// Whether a filter's first level is a literal starting with `$` (it matches only `$` topics),
/// or a wildcard (it matches none).
fn starts_wild(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
}

/// Whether some topic matches both filters (both assumed valid).
pub fn overlap(a: &str, b: &str) -> bool {
    if (starts_wild(a) && b.starts_with('$')) || (starts_wild(b) && a.starts_with('$')) {
        return false;
    }
    let (mut x, mut y) = (a.split('/'), b.split('/'));
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
            (Some(p), Some(q)) if p == "+" || q == "+" || p == q => {}
            _ => return false,
        }
    }
}

/// Whether every topic that matches `inner` matches `outer` (both assumed valid).
pub fn covers(outer: &str, inner: &str) -> bool {
    if starts_wild(outer) && inner.starts_with('$') {
        return false;
    }
    let (mut o, mut i) = (outer.split('/'), inner.split('/'));
    for level in 0.. {
        match (o.next(), i.next()) {
            (Some("#"), _) | (None, None) => return true,
            // `+/#` matches one level and more: all that `#` does (deeper, `a/#` also
            // matches `a`, which `a/+/#` does not).
            (Some("+"), Some("#")) => return level == 0 && o.next() == Some("#"),
            (Some("+"), Some(_)) => {}
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
    false
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

    /// Every topic of up to four levels over a few names (enough to witness any overlap of
    /// the filters `filter()` makes).
    fn universe() -> Vec<String> {
        let names = ["a", "b", "$x", "c", ""];
        let mut all: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut last = all.clone();
        for _ in 1..4 {
            last = last
                .iter()
                .flat_map(|t| names.iter().map(move |n| format!("{t}/{n}")))
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    fn filter() -> impl Strategy<Value = String> {
        proptest::collection::vec(prop_oneof!["a", "b", "\\$x", "", "\\+"], 0..3)
            .prop_flat_map(|levels| {
                prop_oneof![
                    Just(levels.join("/")),
                    Just({
                        let mut l = levels.clone();
                        l.push("#".into());
                        l.join("/")
                    })
                ]
            })
            .prop_filter("valid", |f| valid_filter(f))
    }

    #[test]
    fn overlap_and_cover_examples() {
        assert!(overlap("a/#", "a"));
        assert!(overlap("+/b", "a/+"));
        assert!(!overlap("#", "$SYS/x"));
        assert!(!overlap("a/+", "a/b/c"));
        assert!(covers("a/#", "a"));
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("+/+", "a/b"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("#", "$SYS/#"));
        assert!(covers("$SYS/#", "$SYS/+"));
    }

    proptest! {
        #[test]
        fn overlap_and_cover_agree_with_matching(a in filter(), b in filter()) {
            let topics = universe();
            let both = topics.iter().any(|t| matches(&a, t) && matches(&b, t));
            prop_assert_eq!(overlap(&a, &b), both, "overlap({:?}, {:?})", a, b);
            let within = topics.iter().all(|t| !matches(&b, t) || matches(&a, t));
            prop_assert_eq!(covers(&a, &b), within, "covers({:?}, {:?})", a, b);
        }

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
