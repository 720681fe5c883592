//! Messages to values: pointers, plain payloads, units that want numbers,
//! and every kind of garbage.

use super::*;

fn section(json: &[(&str, &str)], units: &[(&str, &str)]) -> SensorSection {
    SensorSection {
        name: "plug".to_owned(),
        driver: "http".to_owned(),
        json: json
            .iter()
            .map(|(p, j)| ((*p).to_owned(), (*j).to_owned()))
            .collect(),
        units: units
            .iter()
            .map(|(p, u)| ((*p).to_owned(), (*u).to_owned()))
            .collect(),
        ..SensorSection::default()
    }
}

fn t(text: &str) -> Value {
    Value::Text(heapless::String::try_from(text).expect("short"))
}

#[test]
fn pointers_pick_values_and_units_want_numbers() {
    let mapping = Mapping::new(&section(
        &[
            ("plug.power", "/apower"),
            ("plug.on", "/output"),
            ("plug.state", "/state"),
            ("plug.volts", "/v"),
            ("plug.gone", "/missing"),
            ("plug.obj", "/nested"),
        ],
        &[("plug.power", "W"), ("plug.volts", "V")],
    ));
    let values = mapping
        .values(br#"{"apower": 12.5, "output": true, "state": "idle", "v": "230.1", "nested": {"a": 1}}"#)
        .expect("JSON");
    assert_eq!(
        values,
        vec![
            ("plug.power".to_owned(), Value::Float(12.5)),
            ("plug.on".to_owned(), Value::Bool(true)),
            ("plug.state".to_owned(), t("idle")),
            ("plug.volts".to_owned(), Value::Float(230.1)),
            ("plug.gone".to_owned(), error("no /missing")),
            ("plug.obj".to_owned(), error("/nested is not a value")),
        ]
    );
    assert_eq!(mapping.unit("plug.power").as_str(), "W");
    assert_eq!(mapping.unit("plug.on").as_str(), "");
    let text = mapping.values(br#"{"apower": "n/a"}"#).expect("JSON");
    assert_eq!(text[0].1, error("text where a number was expected"));
}

#[test]
fn a_plain_message_is_the_value() {
    let mapping = Mapping::new(&section(&[], &[]));
    assert_eq!(mapping.points().collect::<Vec<_>>(), ["plug"]);
    for (message, value) in [
        (&b" 23.25\n"[..], Value::Float(23.25)),
        (b"ON", Value::Bool(true)),
        (b"false", Value::Bool(false)),
        (b"open", t("open")),
        (b"NaN", error("not a finite number")),
        (b"inf", error("not a finite number")),
        (b"-1e999", error("not a finite number")),
        (
            b"a text much longer than thirty-two bytes",
            error("text too long or not printable"),
        ),
    ] {
        let values = mapping.values(message).expect("readable");
        assert_eq!(values, vec![("plug".to_owned(), value)], "{message:?}");
    }
    let numeric = Mapping::new(&section(&[], &[("plug", "°C")]));
    assert_eq!(
        numeric.values(b"temp=45.0'C").expect("readable")[0].1,
        error("text where a number was expected")
    );
}

#[test]
fn unreadable_messages_say_what_came() {
    let mapping = Mapping::new(&section(&[("plug", "/t")], &[]));
    assert_eq!(
        mapping.values(b"\xff\xfe binary"),
        Err("the message is not UTF-8".to_owned())
    );
    assert_eq!(
        mapping.values(b"<!DOCTYPE html><html><body>500</body></html>"),
        Err("the message is not JSON (it starts \"<!DOCTYPE html><\")".to_owned())
    );
    assert_eq!(
        mapping.values(b"  "),
        Err("the message is not JSON (it is empty)".to_owned())
    );
    // Huge numbers: beyond f64 is not JSON serde_json reads, or not finite.
    let huge = mapping.values(br#"{"t": 1e999}"#);
    assert!(
        huge.is_err() || huge == Ok(vec![("plug".to_owned(), error("not a finite number"))]),
        "{huge:?}"
    );
    assert_eq!(
        mapping.values(br#"{"t": 123456789012345678901234567890}"#),
        Ok(vec![(
            "plug".to_owned(),
            Value::Float(1.2345678901234568e29)
        )])
    );
}

#[test]
fn errors_fit_a_point_and_carry_no_control_characters() {
    let long = format!("no /{}\n", "x".repeat(100));
    match error(&long) {
        Value::Error(e) => {
            assert!(e.len() <= MAX_TEXT);
            assert!(!e.chars().any(char::is_control));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_deadband_compares_numbers_and_anything_else_by_equality() {
    assert!(within_deadband(
        Some(&Value::Float(20.0)),
        &Value::Float(20.3),
        0.5
    ));
    assert!(!within_deadband(
        Some(&Value::Float(20.0)),
        &Value::Float(20.6),
        0.5
    ));
    assert!(within_deadband(
        Some(&Value::Bool(true)),
        &Value::Bool(true),
        0.0
    ));
    assert!(!within_deadband(
        Some(&Value::Bool(true)),
        &Value::Bool(false),
        9.0
    ));
    assert!(!within_deadband(None, &Value::Bool(true), 0.0));
}
