//! Tests of pushed sensors (MQTT topics here; websocket feeds share it).

use super::*;

fn section(json: &[(&str, &str)], deadband: f64) -> SensorSection {
    let mut settings = BTreeMap::new();
    settings.insert("topic".to_owned(), Setting::Text("z2m/kitchen".to_owned()));
    SensorSection {
        name: "kitchen".to_owned(),
        driver: "mqtt".to_owned(),
        // No holding back, except where a test says so.
        interval: std::time::Duration::ZERO,
        deadband,
        settings,
        json: json
            .iter()
            .map(|(p, j)| ((*p).to_owned(), (*j).to_owned()))
            .collect(),
        ..SensorSection::default()
    }
}

fn values_of(readings: &[Reading]) -> Vec<(String, Value)> {
    readings
        .iter()
        .map(|r| (r.name.to_string(), r.value.clone()))
        .collect()
}

#[test]
fn json_pointers_become_points_with_the_sensors_unit() {
    let mut kitchen = section(
        &[
            ("kitchen.temperature", "/temperature"),
            ("kitchen.occupied", "/state/occupancy"),
        ],
        0.0,
    );
    kitchen
        .units
        .insert("kitchen.temperature".to_owned(), "°C".to_owned());
    let mut sources = Sources::new(&[kitchen], "mqtt");
    assert_eq!(sources.topics(), vec!["z2m/kitchen".to_owned()]);
    let readings = sources.on_message(
        Instant::ZERO,
        "z2m/kitchen",
        br#"{"temperature": 21.5, "state": {"occupancy": true}, "other": "x"}"#,
        false,
        7,
    );
    assert_eq!(
        values_of(&readings),
        vec![
            ("kitchen.temperature".to_owned(), Value::Float(21.5)),
            ("kitchen.occupied".to_owned(), Value::Bool(true)),
        ]
    );
    assert_eq!(readings[0].unit.as_str(), "°C");
    assert_eq!(readings[1].unit.as_str(), "");
    assert_eq!(readings[0].ts_ms, 7);
    assert!(sources
        .on_message(Instant::ZERO, "z2m/other", b"{}", false, 7)
        .is_empty());
    assert_eq!(sources.errors, 0);
}

#[test]
fn a_plain_payload_is_the_value() {
    let mut sources = Sources::new(&[section(&[], 0.0)], "mqtt");
    for (payload, value) in [
        (&b" 23.25\n"[..], Value::Float(23.25)),
        (b"ON", Value::Bool(true)),
        (b"false", Value::Bool(false)),
        (
            b"open",
            Value::Text(heapless::String::try_from("open").unwrap()),
        ),
    ] {
        let readings = sources.on_message(Instant::ZERO, "z2m/kitchen", payload, false, 0);
        assert_eq!(values_of(&readings), vec![("kitchen".to_owned(), value)]);
    }
}

#[test]
fn bad_messages_are_errors_counted_and_logged_once_until_a_good_one() {
    let mut sources = Sources::new(&[section(&[("kitchen", "/t")], 0.0)], "mqtt");
    let cases: [(&[u8], &str); 6] = [
        (b"\xff\xfe binary", "the message is not UTF-8"),
        (b"{not json", "the message is not JSON"),
        (br#"{"u": 1}"#, "no /t"),
        (br#"{"t": null}"#, "no /t"),
        (br#"{"t": [1, 2]}"#, "/t is not a value"),
        (
            br#"{"t": "a text much longer than thirty-two bytes"}"#,
            "text too long or not printable",
        ),
    ];
    for (payload, why) in cases {
        let readings = sources.on_message(Instant::ZERO, "z2m/kitchen", payload, false, 0);
        let value = readings.first().map(|r| r.value.clone());
        let last = &sources.sources[0].last["kitchen"].0;
        assert!(
            matches!(last, Value::Error(e) if e.starts_with(&why[..why.len().min(24)])),
            "{payload:?}: {value:?} {last:?}"
        );
    }
    assert_eq!(sources.errors, 6);
    assert!(sources.sources[0].warned);
    sources.on_message(Instant::ZERO, "z2m/kitchen", br#"{"t": 1}"#, false, 0);
    assert!(!sources.sources[0].warned);
}

#[test]
fn the_deadband_holds_back_small_changes() {
    let mut sources = Sources::new(&[section(&[("kitchen", "/t")], 0.5)], "mqtt");
    let mut published = |payload: &[u8]| {
        sources
            .on_message(Instant::ZERO, "z2m/kitchen", payload, false, 0)
            .len()
    };
    assert_eq!(published(br#"{"t": 20.0}"#), 1);
    assert_eq!(published(br#"{"t": 20.3}"#), 0);
    assert_eq!(published(br#"{"t": 20.6}"#), 1);
    assert_eq!(published(br#"{"t": 20.6}"#), 0);
}

#[test]
fn repeats_are_sent_again_only_after_max_interval_and_a_flood_of_garbage_once() {
    let mut sources = Sources::new(&[section(&[("kitchen", "/t")], 0.0)], "mqtt");
    let at = |s: u64| Instant::from_millis(s * 1000);
    assert_eq!(
        sources
            .on_message(at(0), "z2m/kitchen", br#"{"t": 1}"#, false, 0)
            .len(),
        1
    );
    assert_eq!(
        sources
            .on_message(at(30), "z2m/kitchen", br#"{"t": 1}"#, false, 0)
            .len(),
        0
    );
    assert_eq!(
        sources
            .on_message(at(61), "z2m/kitchen", br#"{"t": 1}"#, false, 0)
            .len(),
        1
    );
    let garbage: usize = (0..10_000)
        .map(|_| {
            sources
                .on_message(at(62), "z2m/kitchen", b"{oops", false, 0)
                .len()
        })
        .sum();
    assert_eq!(
        garbage, 1,
        "the error is one reading, however many bad messages"
    );
    assert_eq!(sources.errors, 10_000);
}

#[test]
fn a_retained_message_counts_only_before_the_first_value() {
    let mut sources = Sources::new(&[section(&[("kitchen", "/t")], 0.0)], "mqtt");
    let first = sources.on_message(Instant::ZERO, "z2m/kitchen", br#"{"t": 1}"#, true, 0);
    assert_eq!(first.len(), 1, "the retained value is better than none");
    let again = sources.on_message(Instant::ZERO, "z2m/kitchen", br#"{"t": 5}"#, true, 0);
    assert!(again.is_empty(), "a reconnect's retained copy is not news");
    let live = sources.on_message(Instant::ZERO, "z2m/kitchen", br#"{"t": 5}"#, false, 0);
    assert_eq!(live.len(), 1);
}

#[test]
fn changes_within_the_interval_are_held_and_the_latest_sent_when_it_ends() {
    let mut kitchen = section(&[("kitchen", "/t")], 0.0);
    kitchen.interval = std::time::Duration::from_secs(1);
    let mut sources = Sources::new(&[kitchen], "mqtt");
    let ms = Instant::from_millis;
    let message = |sources: &mut Sources, at: u64, t: u32| {
        let payload = format!("{{\"t\": {t}}}");
        values_of(&sources.on_message(ms(at), "z2m/kitchen", payload.as_bytes(), false, at))
    };
    // The first change goes at once; 100 more within the second are held.
    assert_eq!(
        message(&mut sources, 0, 0),
        vec![("kitchen".to_owned(), Value::Float(0.0))]
    );
    for n in 1..=100 {
        assert!(message(&mut sources, u64::from(n) * 9, n).is_empty());
    }
    assert_eq!(sources.next_due(), Some(ms(1000)));
    assert!(sources.due(ms(999)).is_empty());
    let due = sources.due(ms(1000));
    assert_eq!(
        values_of(&due),
        vec![("kitchen".to_owned(), Value::Float(100.0))]
    );
    assert_eq!(due[0].ts_ms, 900, "the held message's own time");
    assert_eq!(sources.next_due(), None);
    // A change after a quiet interval goes at once again.
    assert_eq!(
        message(&mut sources, 2500, 7),
        vec![("kitchen".to_owned(), Value::Float(7.0))]
    );
    // A held change that returns to the value sent is void.
    assert!(message(&mut sources, 2600, 8).is_empty());
    assert!(message(&mut sources, 2700, 7).is_empty());
    assert_eq!(sources.next_due(), None);
    assert!(sources.due(ms(5000)).is_empty());
}

#[test]
fn a_websocket_sensor_is_keyed_by_name_and_a_lost_feed_is_an_error_once() {
    let feed = SensorSection {
        name: "feed".to_owned(),
        driver: "websocket".to_owned(),
        json: vec![("feed".to_owned(), "/p".to_owned())],
        ..SensorSection::default()
    };
    let mut sources = Sources::new(&[feed.clone(), section(&[], 0.0)], "websocket");
    assert_eq!(sources.topics(), vec!["feed".to_owned()]);
    let ms = Instant::from_millis;
    let first = sources.on_message(ms(0), "feed", br#"{"p": 7}"#, false, 1);
    assert_eq!(
        values_of(&first),
        vec![("feed".to_owned(), Value::Float(7.0))]
    );
    let lost = sources.on_failure(ms(10), "feed", "connection lost: reset", 2);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].value.to_string(), "error: connection lost: reset");
    assert!(sources
        .on_failure(ms(20), "feed", "connection lost: reset", 3)
        .is_empty());
    assert_eq!(sources.errors, 2);
    assert!(sources.on_failure(ms(20), "other", "x", 3).is_empty());
    let back = sources.on_message(ms(30), "feed", br#"{"p": 7}"#, false, 4);
    assert_eq!(
        values_of(&back),
        vec![("feed".to_owned(), Value::Float(7.0))]
    );
}
