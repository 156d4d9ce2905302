use super::*;

fn route(n2xx: u64, last: Secs) -> RouteRecord {
    RouteRecord {
        by_class: [0, n2xx, 0, 0, 0],
        first_seen: Some(last),
        last_seen: Some(last),
        ..RouteRecord::default()
    }
}

fn one(name: &str, prefix: &str, r: RouteRecord, oauth: Oauth) -> Ledger {
    let mut l = Ledger::default();
    l.integrations.insert(
        name.into(),
        IntegrationRecord {
            oauth,
            routes: [(prefix.to_owned(), r)].into(),
        },
    );
    l
}

#[test]
fn deltas_added_in_any_order_give_the_same_totals() {
    let a = one("erp", "/prod", route(3, 100), Oauth::Since(50));
    let b = one("erp", "/prod", route(4, 200), Oauth::Since(70));
    let mut ab = Ledger::default();
    ab.absorb(&a);
    ab.absorb(&b);
    let mut ba = Ledger::default();
    ba.absorb(&b);
    ba.absorb(&a);
    assert_eq!(ab, ba);
    let r = &ab.integrations["erp"].routes["/prod"];
    assert_eq!(r.by_class[1], 7);
    assert_eq!((r.first_seen, r.last_seen), (Some(100), Some(200)));
    assert_eq!(ab.integrations["erp"].oauth, Oauth::Since(50));
}

#[test]
fn a_passthrough_report_ends_the_oauth_window_and_a_later_flip_starts_a_new_one() {
    let mut total = one("erp", "/p", route(1, 10), Oauth::Since(10));
    total.absorb(&one(
        "erp",
        "/p",
        RouteRecord::default(),
        Oauth::Passthrough,
    ));
    assert_eq!(total.integrations["erp"].oauth, Oauth::Passthrough);
    total.absorb(&one("erp", "/p", RouteRecord::default(), Oauth::Since(99)));
    assert_eq!(total.integrations["erp"].oauth, Oauth::Since(99));
    total.absorb(&one("erp", "/p", RouteRecord::default(), Oauth::Unknown));
    assert_eq!(total.integrations["erp"].oauth, Oauth::Since(99));
}

#[test]
fn since_sends_only_what_changed_and_merging_it_restores_the_totals() {
    let before = one("erp", "/p", route(3, 100), Oauth::Passthrough);
    let mut now = before.clone();
    now.integrations
        .get_mut("erp")
        .unwrap()
        .routes
        .insert("/q".into(), route(2, 150));
    now.integrations
        .get_mut("erp")
        .unwrap()
        .routes
        .get_mut("/p")
        .unwrap()
        .by_class[1] = 5;
    let delta = now.since(&before);
    assert_eq!(delta.integrations["erp"].oauth, Oauth::Unknown);
    assert_eq!(delta.integrations["erp"].routes["/p"].by_class[1], 2);
    let mut stored = before.clone();
    stored.absorb(&delta);
    assert_eq!(stored.integrations, now.integrations);
    assert!(now.since(&now).integrations.is_empty());
}

#[test]
fn records_round_trip_through_bytes_and_merge_as_the_ledger_does() {
    let delta = one("erp", "/p", route(3, 100), Oauth::Since(5));
    let mut stored: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for _ in 0..2 {
        for c in delta.changes() {
            let old = stored.get(&c.key()).map(Vec::as_slice);
            if let Some(new) = c.merged(old).unwrap() {
                stored.insert(c.key(), new);
            }
        }
    }
    let back =
        Ledger::from_records(stored.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
    let mut expected = delta.clone();
    expected.absorb(&delta);
    assert_eq!(back.integrations, expected.integrations);
    let err = Change::Meta(Meta::default())
        .merged(Some(b"{oops"))
        .unwrap_err();
    assert!(err.to_string().contains("\"meta\""), "{err}");
}

#[test]
fn recent_lists_keep_the_newest_distinct_values() {
    let mut k = KeyRecord {
        addresses: vec!["10.0.0.1".into(), "10.0.0.2".into()],
        first_seen: 5,
        ..KeyRecord::default()
    };
    k.absorb(&KeyRecord {
        addresses: vec!["10.0.0.3".into(), "10.0.0.1".into()],
        first_seen: 9,
        last_seen: 9,
        ..KeyRecord::default()
    });
    assert_eq!(k.addresses, ["10.0.0.3", "10.0.0.1", "10.0.0.2"]);
    assert_eq!((k.first_seen, k.last_seen), (5, 9));
}

#[test]
fn eviction_drops_the_least_recently_seen_and_counts_them() {
    let mut l = Ledger::default();
    for i in 0..5u64 {
        l.keys.insert(
            format!("{i:064x}"),
            KeyRecord {
                last_seen: 100 - i,
                ..KeyRecord::default()
            },
        );
    }
    let gone = l.evict_keys(3);
    assert_eq!(gone, [format!("{:064x}", 4), format!("{:064x}", 3)]);
    assert_eq!(l.meta.keys_evicted, 2);
    assert_eq!(l.keys.len(), 3);
}
