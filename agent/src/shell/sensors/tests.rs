//! Unit tests of `sensors`: sampling: deadband, backoff, timeouts, device building.
use super::*;
use std::collections::VecDeque;

/// A device answering from a script.
struct Scripted {
    answers: VecDeque<Result<Vec<Sample>, HalError>>,
}

impl Sensor for Scripted {
    fn quantities(&self) -> &'static [&'static str] {
        &["temperature", "humidity"]
    }
    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        self.answers
            .pop_front()
            .unwrap_or_else(|| Err(HalError::Device("script ended".into())))
    }
}

fn section(name: &str, interval_s: u64, deadband: f64) -> SensorSection {
    let mut settings = BTreeMap::new();
    settings.insert(
        "max_interval".to_owned(),
        Setting::Duration(Duration::from_secs(60)),
    );
    SensorSection {
        name: name.to_owned(),
        driver: "bme280".to_owned(),
        interval: Duration::from_secs(interval_s),
        deadband,
        settings,
        ..SensorSection::default()
    }
}

fn climate(t: f64, h: f64) -> Result<Vec<Sample>, HalError> {
    Ok(vec![
        Sample::new("temperature", t, shoal_hal::Unit::Celsius),
        Sample::new("humidity", h, shoal_hal::Unit::Percent),
    ])
}

fn at(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

/// One read at `now` through start/finish; the published (name, value).
fn read(
    sampler: &mut Sampler,
    now: Instant,
    result: Result<Vec<Sample>, HalError>,
) -> Vec<(String, String)> {
    let device = sampler.start(now).expect("idle");
    sampler
        .finish(now, device, ReadResult::Samples(result))
        .into_iter()
        .map(|r| (r.name.to_string(), r.value.to_string()))
        .collect()
}

fn empty() -> Box<dyn Sensor> {
    Box::new(Scripted {
        answers: VecDeque::new(),
    })
}

#[test]
fn point_names_follow_the_sensor_name() {
    assert_eq!(
        point_names("outdoor", &["value"]),
        [("value", "outdoor".to_owned())]
    );
    assert_eq!(
        point_names("climate", &["temperature", "humidity"]),
        [
            ("temperature", "climate.temperature".to_owned()),
            ("humidity", "climate.humidity".to_owned())
        ]
    );
    assert_eq!(
        point_names("temperature", &["temperature", "humidity"]),
        [
            ("temperature", "temperature".to_owned()),
            ("humidity", "humidity".to_owned())
        ]
    );
}

#[test]
fn a_stable_room_sends_nothing_until_max_interval() {
    let mut sampler =
        Sampler::new(&section("climate", 10, 0.5), Device::Hal(empty()), at(0)).expect("valid");
    assert_eq!(read(&mut sampler, at(0), climate(21.0, 40.0)).len(), 2);
    // Within the deadband: nothing.
    assert!(read(&mut sampler, at(10), climate(21.3, 40.2)).is_empty());
    // Temperature moved: only it.
    assert_eq!(
        read(&mut sampler, at(20), climate(21.6, 40.2)),
        [("climate.temperature".to_owned(), "21.6".to_owned())]
    );
    // A minute without publishing humidity: it goes out anyway.
    assert_eq!(
        read(&mut sampler, at(60), climate(21.6, 40.1)),
        [("climate.humidity".to_owned(), "40.1".to_owned())]
    );
}

#[test]
fn a_failing_sensor_publishes_its_error_once_backs_off_and_recovers() {
    let mut sampler =
        Sampler::new(&section("climate", 10, 0.5), Device::Hal(empty()), at(0)).expect("valid");
    read(&mut sampler, at(0), climate(21.0, 40.0));
    let unplugged = || Err(HalError::Bus(shoal_hal::bus::BusError::Nack(0x76)));
    let published = read(&mut sampler, at(10), unplugged());
    assert_eq!(published.len(), 2);
    assert!(
        published[0]
            .1
            .starts_with("error: no device answers at I2C"),
        "{published:?}"
    );
    assert_eq!(sampler.next, at(20));
    // Still failing: nothing new published; the wait doubles.
    assert!(read(&mut sampler, at(20), unplugged()).is_empty());
    assert_eq!(sampler.next, at(40));
    assert!(read(&mut sampler, at(40), unplugged()).is_empty());
    assert_eq!(sampler.next, at(80));
    // Plugged back: fresh values at once, even within the deadband.
    assert_eq!(read(&mut sampler, at(80), climate(21.0, 40.0)).len(), 2);
    assert_eq!(sampler.next, at(90));
    assert_eq!(sampler.error(), None);
}

#[test]
fn backoff_is_capped() {
    let mut sampler =
        Sampler::new(&section("climate", 10, 0.5), Device::Hal(empty()), at(0)).expect("valid");
    let mut now = 0;
    for _ in 0..20 {
        read(
            &mut sampler,
            at(now),
            Err(HalError::Device("broken".into())),
        );
        now = sampler.next.as_millis() / 1000;
    }
    let wait = sampler.next.saturating_since(at(now - 60));
    assert_eq!(wait, MAX_BACKOFF);
}

#[test]
fn a_hung_read_is_an_error_after_its_timeout_and_blocks_no_one() {
    let mut sampler =
        Sampler::new(&section("climate", 10, 0.5), Device::Hal(empty()), at(0)).expect("valid");
    let device = sampler.start(at(0)).expect("idle");
    assert!(
        !sampler.is_due(at(100)),
        "no second read while one is in flight"
    );
    assert_eq!(sampler.deadline(), Some(at(0) + DEFAULT_TIMEOUT));
    assert!(sampler.check_timeout(at(4)).is_empty());
    let published = sampler.check_timeout(at(5));
    assert_eq!(published.len(), 2);
    assert_eq!(
        published[0].value.to_string(),
        "error: read timed out after 5s"
    );
    assert!(sampler.check_timeout(at(6)).is_empty(), "published once");
    // The read finally returns: values again.
    let result = ReadResult::Samples(climate(20.0, 30.0));
    assert_eq!(sampler.finish(at(30), device, result).len(), 2);
}

#[test]
fn errors_are_cut_to_fit_a_point() {
    let long = "é".repeat(40);
    let short = short_error(&long);
    assert!(short.len() <= wire::MAX_TEXT);
    assert!(short.chars().all(|c| c == 'é'));
    assert_eq!(short_error("line\nbreak").as_str(), "line break");
}

#[test]
fn unseeded_sim_sensors_differ_per_node_and_a_seed_is_shared() {
    let mut section = section("outdoor", 10, 0.0);
    section.driver = "sim".to_owned();
    let first_reading = |seed: u64| {
        SimSensor::new(Waveform::Walk, 0.0, 100.0, Duration::from_secs(600), seed)
            .expect("valid")
            .sample(Duration::ZERO)
    };
    // Without a seed: one per node, the same at every start.
    let (a, b) = (sim_seed(&section, "pi-a"), sim_seed(&section, "pi-b"));
    assert_ne!(a, b);
    assert_eq!(a, sim_seed(&section, "pi-a"));
    assert_ne!(first_reading(a), first_reading(b));
    // And per sensor on one node.
    let other = SensorSection {
        name: "indoor".to_owned(),
        ..section.clone()
    };
    assert_ne!(sim_seed(&other, "pi-a"), a);
    // `seed` configured: the same readings on every node.
    section.settings.insert("seed".to_owned(), Setting::Int(7));
    assert_eq!(sim_seed(&section, "pi-a"), 7);
    assert_eq!(sim_seed(&section, "pi-b"), 7);
    assert!(device(&section, "pi-a").is_ok());
}

#[test]
fn a_reload_keeps_unchanged_sensors_and_replaces_changed_ones() {
    let sim = |name: &str, interval_s: u64| SensorSection {
        driver: "sim".to_owned(),
        ..section(name, interval_s, 0.0)
    };
    let mut sensors = Sensors::new(&[sim("a", 1), sim("b", 1)], "pi-1", at(0));
    let state = |sensors: &Sensors| -> Vec<(String, u64, Instant)> {
        sensors
            .samplers
            .iter()
            .map(|s| (s.name.clone(), s.id, s.next))
            .collect()
    };
    assert_eq!(
        state(&sensors),
        [("a".into(), 0, at(0)), ("b".into(), 1, at(0))]
    );
    // `a` was read: its schedule moved on; a reload must not reset it.
    sensors.samplers[0].next = at(7);
    sensors.reload(&[sim("c", 1), sim("a", 1), sim("b", 5)], "pi-1", at(3));
    assert_eq!(
        state(&sensors),
        [
            ("c".into(), 2, at(3)),
            ("a".into(), 0, at(7)),
            ("b".into(), 3, at(3)),
        ],
        "a kept, b changed (a new sampler), c new"
    );
    sensors.reload(&[sim("c", 1)], "pi-1", at(4));
    assert_eq!(state(&sensors), [("c".into(), 2, at(3))]);
    assert_eq!(sensors.len(), 1);
}

/// An `http` sensor of a Shelly-like plug (nothing is fetched here: the
/// tests hand the sampler what a read returned).
fn plug() -> Sampler {
    let section = SensorSection {
        name: "plug".to_owned(),
        driver: "http".to_owned(),
        interval: Duration::from_secs(10),
        json: vec![
            ("plug.power".to_owned(), "/apower".to_owned()),
            ("plug.on".to_owned(), "/output".to_owned()),
        ],
        units: [("plug.power".to_owned(), "W".to_owned())].into(),
        ..SensorSection::default()
    };
    let fetch = Fetch::Command(vec!["/bin/true".to_owned()]);
    Sampler::new(&section, Device::Fetch(fetch), at(0)).expect("valid")
}

fn message(sampler: &mut Sampler, now: Instant, result: Result<&str, &str>) -> Vec<Reading> {
    let device = sampler.start(now).expect("idle");
    let result = result.map(|m| m.as_bytes().to_vec()).map_err(str::to_owned);
    sampler.finish(now, device, ReadResult::Message(result))
}

#[test]
fn a_message_sensor_maps_pointers_to_points_with_their_units() {
    let mut sampler = plug();
    let readings = message(
        &mut sampler,
        at(0),
        Ok(r#"{"apower": 12.5, "output": true}"#),
    );
    let got: Vec<(String, String, String)> = readings
        .iter()
        .map(|r| (r.name.to_string(), r.value.to_string(), r.unit.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("plug.power".into(), "12.5".into(), "W".into()),
            ("plug.on".into(), "true".into(), "".into())
        ]
    );
    // Unchanged: nothing; a changed boolean goes out.
    assert!(message(
        &mut sampler,
        at(10),
        Ok(r#"{"apower": 12.5, "output": true}"#)
    )
    .is_empty());
    let off = message(
        &mut sampler,
        at(20),
        Ok(r#"{"apower": 12.5, "output": false}"#),
    );
    assert_eq!(off.len(), 1);
    assert_eq!(sampler.errors, 0);
}

#[test]
fn a_missing_field_is_an_error_on_its_point_and_garbage_fails_the_read() {
    let mut sampler = plug();
    message(
        &mut sampler,
        at(0),
        Ok(r#"{"apower": 12.5, "output": true}"#),
    );
    // One field gone: its point only, once.
    let readings = message(&mut sampler, at(10), Ok(r#"{"output": true}"#));
    assert_eq!(readings.len(), 1);
    assert_eq!(readings[0].value.to_string(), "error: no /apower");
    assert!(message(&mut sampler, at(20), Ok(r#"{"output": true}"#)).is_empty());
    assert_eq!(sampler.errors, 2, "each bad read counts");
    assert_eq!(sampler.error(), None, "the sensor itself reads");
    // HTML instead of JSON, a 500, NaN where a number belongs.
    let html = message(&mut sampler, at(30), Ok("<html><body>Oops</body></html>"));
    assert_eq!(html.len(), 2);
    assert!(html[0]
        .value
        .to_string()
        .starts_with("error: the message is not JSON"));
    assert_eq!(sampler.next, at(40), "tries again after an interval");
    assert!(message(&mut sampler, at(40), Err("HTTP HTTP/1.1 500 Oops")).len() == 2);
    assert_eq!(sampler.next, at(60), "then backs off");
    let text = message(
        &mut sampler,
        at(60),
        Ok(r#"{"apower": "NaN", "output": true}"#),
    );
    assert_eq!(sampler.error(), None, "a good read again");
    let power = text
        .iter()
        .find(|r| r.name.as_str() == "plug.power")
        .expect("sent");
    assert_eq!(power.value.to_string(), "error: not a finite number");
    assert_eq!(sampler.errors, 5);
    // And back to a number.
    let back = message(&mut sampler, at(70), Ok(r#"{"apower": 3, "output": true}"#));
    assert_eq!(back[0].value.to_string(), "3");
}

#[test]
fn a_message_read_times_itself_out_once() {
    let mut sampler = plug();
    let device = sampler.start(at(0)).expect("idle");
    assert_eq!(sampler.deadline(), None, "its task ends at the timeout");
    assert!(sampler.check_timeout(at(60)).is_empty());
    let result = ReadResult::Message(Err("read timed out after 5s".to_owned()));
    assert_eq!(sampler.finish(at(5), device, result).len(), 2);
    assert_eq!(sampler.errors, 1, "one timeout, one error");
    assert_eq!(
        sampler.next,
        at(15),
        "retried after an interval, as any failure"
    );
}
