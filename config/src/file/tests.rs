//! Unit tests of `file`: the configuration file: every error with its position.
use super::*;

pub(super) fn check(text: &str) -> Result<Config, Problems> {
    parse(text, Path::new("test.toml"))
}

/// `line:col: message` lines of a file that must be invalid.
pub(super) fn problems(text: &str) -> Vec<String> {
    match check(text) {
        Ok(config) => panic!("expected problems, got {config:?}"),
        Err(problems) => problems
            .problems
            .iter()
            .map(|p| format!("{}:{}: {}", p.line, p.col, p.message))
            .collect(),
    }
}

#[test]
fn the_embedded_config_is_valid_and_loopback_only() {
    let config = embedded();
    assert_eq!(config.mesh.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_eq!(
        config.mesh.broadcast,
        vec![Broadcast::Address(Ipv4Addr::new(127, 255, 255, 255))]
    );
    assert!(config.api.listen.ip().is_loopback());
    assert_eq!(config.sensors.len(), 3);
    assert!(config.sensors.iter().all(|s| s.driver == "sim"));
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../shoal.example.toml");
    let config = check(text).unwrap_or_else(|problems| panic!("{problems}"));
    assert_eq!(config.node.name.as_deref(), Some("livingroom"));
    assert_eq!(config.rules[0].run, "fan_on");
    assert_eq!(config.rules[0].hold_for, Duration::from_secs(30));
    assert_eq!(
        config.sensors[0].settings.get("address"),
        Some(&Setting::Int(0x76))
    );
    assert_eq!(
        config.executors[0].action,
        Action::Actuator {
            actuator: "fan".into(),
            command: ActuatorAction::Set(true)
        }
    );
}

#[test]
fn an_empty_file_means_every_default() {
    let config = check("").expect("valid");
    assert_eq!(config.mesh.port, d::MESH_PORT);
    assert_eq!(config.mesh.sync_port, d::SYNC_PORT);
    assert_eq!(config.mesh.news_port, d::MESH_PORT + 2);
    assert_eq!(config.mesh.broadcast, vec![Broadcast::Auto]);
    assert_eq!(config.mesh.beacon_interval, d::BEACON_INTERVAL);
    assert_eq!(config.mesh.suspect_after, d::SUSPECT_AFTER);
    assert_eq!(config.mesh.unreachable_after, d::UNREACHABLE_AFTER);
    assert_eq!(config.limits.max_nodes, d::MAX_NODES);
    assert_eq!(config.state.dir, PathBuf::from(d::STATE_DIR));
    assert_eq!(config.api.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
    assert!(config.sensors.is_empty() && config.mesh.key_file.is_none());
}

#[test]
fn a_mesh_is_keyed_unless_explicitly_open() {
    let keyed = check("").expect("valid");
    assert!(!keyed.mesh.open);
    assert_eq!(
        keyed.key_path(),
        Some(PathBuf::from(d::STATE_DIR).join("mesh.key"))
    );
    let own = check("[mesh]\nkey_file = \"/etc/shoal/mesh.key\"\n").expect("valid");
    assert_eq!(own.key_path(), Some(PathBuf::from("/etc/shoal/mesh.key")));
    let open = check("[mesh]\nopen = true\n").expect("valid");
    assert!(open.mesh.open);
    assert_eq!(open.key_path(), None);
    assert_eq!(
        problems("[mesh]\nopen = true\nkey_file = \"/k\"\n"),
        ["2:8: mesh.open = true runs without a key, but mesh.key_file names one: remove one of them"]
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_position() {
    let text = r#"[mesh]
port = 0
colour = "blue"
beacon_interval = "5s"

[[sensor]]
name = "t"
driver = "sim"

[[sensor]]
name = "t"
driver = "bme999"

[[executor]]
name = "fan_on"
action = { command = ["/bin/true"] }

[[rule]]
name = "cool"
when = "t > 1"
do = "fan_of"
"#;
    assert_eq!(
        problems(text),
        vec![
            "2:8: mesh.port must be a port between 1 and 65535, not 0",
            "3:1: unknown key `mesh.colour`; expected one of: beacon_interval, bind, broadcast, key_file, news_port, open, peers, port, prune_after, suspect_after, sync_port, unreachable_after",
            "4:19: mesh.suspect_after (2s) must be at least twice mesh.beacon_interval (5s), or one lost beacon looks like a failure",
            "10:1: duplicate sensor name \"t\"",
            "10:1: duplicate point (sensor or compute) name \"t\"",
            "12:10: unknown sensor driver \"bme999\"; known: sim, soc_temp, system, bme280, bmp280, sht3x, bh1750, ads1115, ds18b20, gpio_in, mqtt, http, command, websocket",
            "20:9: rule.when: unknown word \"t\": a point is NODE/NAME (self/NAME on this node)",
            "21:6: rule \"cool\" names executor \"fan_of\", which is not defined",
        ]
    );
}

#[test]
fn wrong_types_name_the_key_and_what_was_expected() {
    let text = "[mesh]\nport = \"20194\"\nbroadcast = \"auto\"\nsuspect_after = 2\n[api]\nlisten = \"localhost\"\n";
    assert_eq!(
        problems(text),
        vec![
            "2:8: mesh.port must be an integer, not a string",
            "3:13: mesh.broadcast must be an array of strings, not a string",
            "4:17: mesh.suspect_after must be a duration string like \"5s\", not an integer",
            "6:10: api.listen \"localhost\" must be an address like 127.0.0.1:8080",
        ]
    );
}

#[test]
fn syntax_errors_have_positions_too() {
    let found = problems("[mesh]\nport = 20194\nbind = \n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("3:"), "{found:?}");
    assert!(found[0].contains("TOML syntax"), "{found:?}");
}

#[test]
fn durations_names_and_addresses_are_checked() {
    let text = r#"[node]
name = "living room"
[mesh]
unreachable_after = "3 seconds"
broadcast = ["auto", "10.0.0.255", "everywhere"]
peers = ["gateway:20195", "nohost", "x:0"]
sync_port = 20194
"#;
    assert_eq!(
        problems(text),
        vec![
            "2:8: node.name \"living room\" must be 1 to 32 of A-Z a-z 0-9 _ - .",
            "4:21: mesh.unreachable_after: missing or unknown unit in \"3 seconds\": use ms, s, m or h, e.g. \"500ms\"",
            "5:36: mesh.broadcast entry \"everywhere\" must be \"auto\" or an IPv4 address",
            "6:27: mesh.peers entry \"nohost\" must be host:port",
            "6:37: mesh.peers entry \"x:0\" must be host:port",
            "7:13: mesh.sync_port must differ from mesh.port (20194)",
        ]
    );
}

#[test]
fn executors_and_rules_are_cross_checked() {
    let text = r#"[[actuator]]
name = "fan"
driver = "gpio_out"
pin = 17

[[executor]]
name = "heat"
action = { actuator = "heater", set = true }

[[executor]]
name = "both"
action = { command = ["x"], webhook = "http://x" }

[[executor]]
name = "hook"
action = { webhook = "ftp://x" }

[[rule]]
name = "r"
do = "heat"
"#;
    assert_eq!(
        problems(text),
        vec![
            "8:23: executor \"heat\" sets actuator \"heater\", which is not defined",
            "12:10: executor.action needs exactly one of actuator, command, webhook or publish",
            "16:22: executor.action.webhook \"ftp://x\" must be an http:// or https:// URL",
            "18:1: rule needs `when`",
        ]
    );
}

#[test]
fn simulated_sensors_are_checked() {
    let text = r#"[[sensor]]
name = "a"
driver = "sim"
waveform = "square"

[[sensor]]
name = "b"
driver = "sim"
min = 5.0
max = 1.0

[[sensor]]
name = "c"
driver = "sim"
waveform = "constant"

[[sensor]]
name = "d"
driver = "sim"
period = "soon"
bus = 1
"#;
    assert_eq!(
        problems(text),
        vec![
            "4:12: sensor.waveform \"square\" must be sine, walk, step or constant",
            "10:7: sensor.max (1) must be above sensor.min (5)",
            "12:1: a constant simulated sensor needs `value`",
            "20:10: sensor.period: malformed number in \"soon\"",
            "21:1: unknown key `sensor.bus`; expected one of: deadband, driver, flaky, interval, max, max_interval, min, name, period, quantities, seed, timeout, unit, value, waveform",
        ]
    );
}

#[test]
fn display_prints_file_line_col_message() {
    let problems = check("[mesh]\nport = 0\n").expect_err("invalid");
    assert_eq!(
        problems.to_string(),
        "test.toml:2:8: mesh.port must be a port between 1 and 65535, not 0"
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let error = load(Path::new("/nonexistent/shoal.toml")).expect_err("missing");
    assert!(matches!(error, LoadError::Read { .. }));
    assert!(error
        .to_string()
        .starts_with("cannot read /nonexistent/shoal.toml:"));
}

#[test]
fn limits_are_bounded() {
    assert_eq!(
        problems("[limits]\nmax_nodes = 0\nhistory_per_point = 0\n"),
        vec!["2:13: limits.max_nodes must be between 1 and 1000000"]
    );
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "\u{0}\u{1}",
        "[[[",
        "a = [1, [2, {x = 3}]]",
        "[mesh]\nport = 99999999999999999999",
        "[[sensor]]\n[[sensor]]\nname = 5",
        "sensor = 3",
        "[node]\n[node]",
        "[mesh.sub]\nx=1",
    ];
    for text in samples {
        assert!(check(text).is_err(), "{text:?} should be invalid");
    }
}

#[test]
fn pruning_cannot_come_before_unreachable() {
    assert_eq!(
        problems("[mesh]\nprune_after = \"2s\"\n"),
        vec!["2:15: mesh.prune_after (2s) must be at least mesh.unreachable_after (3s)"]
    );
    assert_eq!(check("").expect("valid").mesh.prune_after, d::PRUNE_AFTER);
}

#[test]
fn unreachable_must_come_after_suspect() {
    assert_eq!(
        problems("[mesh]\nsuspect_after = \"3s\"\nunreachable_after = \"3s\"\n"),
        vec!["3:21: mesh.unreachable_after (3s) must be later than mesh.suspect_after (3s)"]
    );
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    const EXAMPLE: &str = include_str!("../../shoal.example.toml");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1500))]

        #[test]
        fn arbitrary_text(text in "\\PC{0,400}") {
            let _ = check(&text);
        }

        #[test]
        fn toml_shaped_text(text in "(\\[{1,2}[a-z.]{0,8}\\]{1,2}\n|[a-z_]{1,12} = (\"[^\"\n]{0,12}\"|-?[0-9]{1,22}|[0-9.e+-]{1,8}|true|\\[[0-9, \"a-z]{0,20}\\]|\\{[a-z =\",0-9]{0,20}\\})\n){0,30}") {
            let _ = check(&text);
        }

        #[test]
        fn mutated_example(cuts in proptest::collection::vec((any::<usize>(), any::<char>()), 1..6)) {
            let mut text: Vec<char> = EXAMPLE.chars().collect();
            for (position, replacement) in cuts {
                let index = position % text.len();
                text[index] = replacement;
            }
            let text: String = text.into_iter().collect();
            if let Err(problems) = check(&text) {
                // Every problem has a real position and a sentence.
                for problem in &problems.problems {
                    prop_assert!(problem.line >= 1 && problem.col >= 1);
                    prop_assert!(!problem.message.is_empty());
                    prop_assert!(problem.line <= text.lines().count() + 1);
                }
            }
        }
    }
}

#[test]
fn executor_timeout_and_policy_have_defaults_and_are_checked() {
    let config = check(
        r#"[[executor]]
name = "a"
action = { command = ["/bin/true"] }

[[executor]]
name = "b"
action = { command = ["/bin/true"] }
remote = true
timeout = "2m"
policy = "queue"
"#,
    )
    .expect("valid");
    assert_eq!(config.executors[0].timeout, d::EXECUTOR_TIMEOUT);
    assert_eq!(config.executors[0].policy, Policy::Refuse);
    assert!(!config.executors[0].remote);
    assert_eq!(config.executors[1].timeout, Duration::from_secs(120));
    assert_eq!(config.executors[1].policy, Policy::Queue);
    assert!(config.executors[1].remote);
    assert_eq!(
        problems(
            r#"[[executor]]
name = "a"
action = { command = ["/bin/true"] }
policy = "sometimes"
timeout = "soon"
"#
        ),
        vec![
            "4:10: executor.policy \"sometimes\" must be \"refuse\" or \"queue\"",
            "5:11: executor.timeout: malformed number in \"soon\"",
        ]
    );
}

#[test]
fn the_api_token_lives_in_the_state_directory_unless_set() {
    let config = check("[state]\ndir = \"/srv/shoal\"\n").expect("valid");
    assert_eq!(config.api.token_file, Path::new("/srv/shoal/api.token"));
    let config = check("[api]\ntoken_file = \"/etc/shoal/token\"\n").expect("valid");
    assert_eq!(config.api.token_file, Path::new("/etc/shoal/token"));
}

#[test]
fn hardware_settings_are_checked_against_the_datasheets() {
    let text = r#"[[sensor]]
name = "climate"
driver = "bme280"
bus = 1
address = 0x40
quantities = ["temperature", "lux"]

[[sensor]]
name = "door"
driver = "gpio_in"
pin = 40
pull = "sideways"

[[sensor]]
name = "adc"
driver = "ads1115"
bus = 99
channels = [0, 5]
gain = 3.3

[[sensor]]
name = "probe"
driver = "ds18b20"
device = "10-abc"

[[sensor]]
name = "flappy"
driver = "sim"
flaky = 1.5

[[sensor]]
name = "motion"
driver = "gpio_in"
"#;
    assert_eq!(
        problems(text),
        vec![
            "5:11: sensor.address 0x40 is not an address a bme280 can have (0x76, 0x77)",
            "6:14: sensor.quantities: a bme280 gives no \"lux\" (it gives temperature, humidity, pressure)",
            "11:7: sensor.pin 40 is not a GPIO pin: BCM numbers 0 to 27",
            "12:8: sensor.pull \"sideways\" must be up, down or off",
            "17:7: sensor.bus 99 is not an I2C bus number (0 to 22; 1 on a Pi)",
            "18:12: sensor.channels [\"0\", \"5\"] must be inputs 0 to 3",
            "19:8: sensor.gain 3.3 must be a full-scale range in volts: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256",
            "24:10: sensor.device \"10-abc\" must be a 1-wire id like \"28-00000a1b2c3d\" or \"auto\"",
            "29:9: sensor.flaky 1.5 must be a probability, 0.0 to 1.0",
            "31:1: a gpio_in sensor needs `pin` (BCM number)",
        ]
    );
    // The same sensors done right.
    let fixed = r#"[[sensor]]
name = "climate"
driver = "bme280"
address = 0x77
quantities = ["temperature", "humidity"]

[[sensor]]
name = "adc"
driver = "ads1115"
address = 0x49
channels = [0, 3]
gain = 4.096
scale = 25.0
unit = "ppm"
"#;
    assert!(check(fixed).is_ok(), "{:?}", check(fixed).err());
}

#[test]
fn derived_points_that_read_themselves_are_refused() {
    let text = r#"[[compute]]
name = "a"
expr = "self/b + 1"

[[compute]]
name = "b"
expr = "avg(*/a)"

[[compute]]
name = "temperature"
expr = "max(*/temperature)"

[[compute]]
name = "avg_temperature"
expr = "avg(*/temperature)"
"#;
    assert_eq!(
        problems(text),
        vec![
            "1:1: compute \"a\" depends on itself: a -> b -> a",
            "9:1: compute \"temperature\" depends on itself: temperature -> temperature",
        ]
    );
}

#[test]
fn actuator_actions_set_toggle_pulse_and_duty() {
    let text = r#"[[actuator]]
name = "fan"
driver = "sim"

[[executor]]
name = "a"
action = { actuator = "fan", toggle = true }

[[executor]]
name = "b"
action = { actuator = "fan", pulse = "2s" }

[[executor]]
name = "c"
action = { actuator = "fan", duty = 0.25 }
"#;
    let config = check(text).expect("valid");
    let commands: Vec<Action> = config.executors.iter().map(|e| e.action.clone()).collect();
    assert_eq!(
        commands,
        [
            Action::Actuator {
                actuator: "fan".into(),
                command: ActuatorAction::Toggle
            },
            Action::Actuator {
                actuator: "fan".into(),
                command: ActuatorAction::Pulse(Duration::from_secs(2))
            },
            Action::Actuator {
                actuator: "fan".into(),
                command: ActuatorAction::Duty(0.25)
            },
        ]
    );
    let bad = r#"[[actuator]]
name = "fan"
driver = "sim"

[[executor]]
name = "a"
action = { actuator = "fan", set = true, toggle = true }

[[executor]]
name = "b"
action = { actuator = "fan", duty = 1.5 }
"#;
    assert_eq!(
        problems(bad),
        vec![
            "7:10: executor.action with actuator needs one of set, toggle, pulse or duty",
            "11:10: executor.action.duty must be within 0.0 and 1.0",
        ]
    );
}

#[test]
fn a_local_pattern_matching_nothing_is_a_warning_not_an_error() {
    let text = r#"[[sensor]]
name = "temperature"
driver = "sim"

[[executor]]
name = "x"
action = { command = ["/bin/true"] }

[[rule]]
name = "r"
when = "self/temprature > 1 and self/temperature > 2 and other/anything > 3"
do = "x"
"#;
    let config = check(text).expect("valid, with a warning");
    let warnings: Vec<String> = config
        .warnings
        .iter()
        .map(|w| format!("{}:{}: {}", w.line, w.col, w.message))
        .collect();
    assert_eq!(
        warnings,
        ["9:1: rule \"r\" reads self/temprature, which matches no point of this node (did you mean self/temperature?)"]
    );
}

#[test]
fn api_listen_with_port_0_is_refused() {
    let found = problems("[api]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("2:10: api.listen needs a port"),
        "{found:?}"
    );
}

#[test]
fn fifty_thousand_unknown_keys_are_each_placed_on_their_line() {
    // Each problem's position used to be found by scanning the file from
    // its start: quadratic, 50k keys took over 20 s. The positions come
    // from a line index now; they must stay exact, multi-byte text included.
    let mut text = String::from("# é\n[api]\n");
    for i in 0..50_000 {
        text.push_str(&format!("k{i} = \"é\" # ü\n"));
    }
    let found = problems(&text);
    assert_eq!(found.len(), 50_000);
    assert!(
        found[0].starts_with("3:1: unknown key `api.k0`"),
        "{}",
        found[0]
    );
    assert!(
        found[49_999].starts_with("50002:1: unknown key `api.k49999`"),
        "{}",
        found[49_999]
    );
    let found = problems("a = \"é\"\nb = 1 = 2\n");
    assert!(found[0].starts_with("2:7:"), "{found:?}");
}

#[test]
fn a_config_file_without_end_is_refused_not_read_until_memory_runs_out() {
    let error = load(Path::new("/dev/zero")).expect_err("refused");
    let message = error.to_string();
    assert!(
        message.contains("/dev/zero") && message.contains("larger than 1024 KiB"),
        "{message}"
    );
    // At the limit it is read; one byte over it is refused.
    let fits = vec![b'#'; MAX_FILE_BYTES as usize];
    assert_eq!(read_bounded(&fits[..]).expect("fits").len(), fits.len());
    let over = vec![b'#'; MAX_FILE_BYTES as usize + 1];
    assert!(read_bounded(&over[..]).is_err());
}

#[test]
fn an_mqtt_section_takes_a_broker_url_and_has_defaults() {
    let config = check("[mqtt]\nbroker = \"mqtt://192.168.1.5\"\n").expect("valid");
    let mqtt = config.mqtt.expect("valid");
    assert_eq!((mqtt.host.as_str(), mqtt.port), ("192.168.1.5", 1883));
    assert_eq!(mqtt.topic_prefix, "shoal");
    assert_eq!(mqtt.discovery_prefix, "homeassistant");
    assert_eq!(mqtt.bridge, BridgeRole::Auto);
    assert_eq!(mqtt.keepalive, Duration::from_secs(30));
    assert_eq!(mqtt.username, None);
    let config = check(
        "[mqtt]\nbroker = \"mqtt://[::1]:1884/\"\nusername = \"shoal\"\npassword_file = \"/etc/shoal/mqtt.password\"\ntopic_prefix = \"home/mesh\"\ndiscovery_prefix = \"\"\nbridge = \"never\"\nkeepalive = \"10s\"\n",
    )
    .expect("valid");
    let mqtt = config.mqtt.expect("valid");
    assert_eq!((mqtt.host.as_str(), mqtt.port), ("::1", 1884));
    assert_eq!(mqtt.username.as_deref(), Some("shoal"));
    assert_eq!(
        mqtt.password_file,
        Some(std::path::PathBuf::from("/etc/shoal/mqtt.password"))
    );
    assert_eq!(mqtt.topic_prefix, "home/mesh");
    assert_eq!(mqtt.discovery_prefix, "");
    assert_eq!(mqtt.bridge, BridgeRole::Never);
    assert!(check("").expect("valid").mqtt.is_none());
}

#[test]
fn bad_mqtt_settings_are_each_named() {
    let all = problems(
        "[mqtt]\nbroker = \"mqtts://h:8883\"\ntopic_prefix = \"a/+/b\"\ndiscovery_prefix = \"x//y\"\nbridge = \"always\"\nkeepalive = \"0s\"\ncolour = 1\n",
    )
    .join("\n");
    for expected in [
        "TLS brokers (mqtts://) are not supported",
        "mqtt.topic_prefix \"a/+/b\"",
        "mqtt.discovery_prefix \"x//y\"",
        "mqtt.bridge \"always\" must be \"auto\" or \"never\"",
        "mqtt.keepalive must be 1s to 65535s",
        "colour",
    ] {
        assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
    }
    assert!(problems("[mqtt]\n")
        .join("")
        .contains("mqtt needs `broker`"));
    for url in [
        "http://h",
        "mqtt://",
        "mqtt://h:0",
        "mqtt://h:99999",
        "mqtt://h h",
    ] {
        assert!(parse_broker(url).is_err(), "{url}");
    }
    assert_eq!(
        parse_broker("tcp://broker.lan:1884"),
        Ok(("broker.lan".to_owned(), 1884))
    );
}

#[test]
fn an_executor_exposed_to_mqtt_must_be_remote() {
    let base = "[[executor]]\nname = \"open\"\naction = { command = [\"/bin/true\"] }\n";
    assert!(problems(&format!("{base}mqtt = true\n"))
        .join("")
        .contains("executor.mqtt = true needs remote = true"));
    let config = check(&format!("{base}mqtt = true\nremote = true\n")).expect("valid");
    assert!(config.executors[0].mqtt);
    assert!(!check(base).expect("valid").executors[0].mqtt);
}

#[test]
fn an_mqtt_sensor_takes_a_topic_and_json_pointers() {
    let base = "[mqtt]\nbroker = \"mqtt://h\"\n[[sensor]]\nname = \"kitchen\"\ndriver = \"mqtt\"\ntopic = \"zigbee2mqtt/kitchen\"\n";
    let config = check(&format!(
        "{base}json = {{ temperature = \"/temperature\", humidity = \"/humidity\" }}\nunit = \"°C\"\n"
    ))
    .expect("valid");
    let sensor = &config.sensors[0];
    assert_eq!(
        sensor.json,
        vec![
            ("kitchen.humidity".to_owned(), "/humidity".to_owned()),
            ("kitchen.temperature".to_owned(), "/temperature".to_owned()),
        ]
    );
    assert_eq!(
        sensor.settings.get("topic"),
        Some(&Setting::Text("zigbee2mqtt/kitchen".to_owned()))
    );
    let config = check(&format!("{base}json = \"/temperature\"\n")).expect("valid");
    assert_eq!(
        config.sensors[0].json,
        vec![("kitchen".to_owned(), "/temperature".to_owned())]
    );
    assert!(check(base).expect("valid").sensors[0].json.is_empty());
    // At most one reading a second unless said otherwise.
    assert_eq!(
        check(base).expect("valid").sensors[0].interval,
        d::MQTT_SENSOR_INTERVAL
    );
    let fast = check(&format!("{base}interval = \"100ms\"\n")).expect("valid");
    assert_eq!(
        fast.sensors[0].interval,
        std::time::Duration::from_millis(100)
    );
    // A rule on a field is not "a pattern that matches no point".
    let config = check(&format!(
        "{base}json = {{ t = \"/t\", h = \"/h\" }}\n[[executor]]\nname = \"x\"\naction = {{ command = [\"/bin/true\"] }}\n[[rule]]\nname = \"r\"\nwhen = \"self/kitchen.t > 1\"\ndo = \"x\"\n"
    ))
    .expect("valid");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
}

#[test]
fn bad_mqtt_sensors_are_each_named() {
    let all = problems(
        "[[sensor]]\nname = \"a\"\ndriver = \"mqtt\"\ntopic = \"x/+\"\njson = { t = \"temperature\", u = 3 }\n[[sensor]]\nname = \"b\"\ndriver = \"mqtt\"\njson = [1]\n",
    )
    .join("\n");
    for expected in [
        "sensor \"a\" uses driver mqtt, which needs an [mqtt] section",
        "sensor.topic must be one MQTT topic (no + or # wildcards)",
        "sensor.json \"temperature\" must be empty or start with /",
        "sensor.json.u must be a JSON pointer string",
        "an mqtt sensor needs `topic`",
        "sensor.json must be a JSON pointer",
    ] {
        assert!(all.contains(expected), "{expected:?} missing from:\n{all}");
    }
}

#[test]
fn the_agents_own_point_prefixes_are_reserved() {
    for (section, name) in [
        (
            "[[sensor]]\nname = \"exec.door\"\ndriver = \"system\"\n",
            "exec.door",
        ),
        (
            "[[compute]]\nname = \"switch.pump\"\nexpr = \"1\"\n",
            "switch.pump",
        ),
        (
            "[[sensor]]\nname = \"mqtt.bridge\"\ndriver = \"system\"\n",
            "mqtt.bridge",
        ),
    ] {
        let all = problems(section).join("\n");
        assert!(
            all.contains(&format!("point \"{name}\": names starting with")),
            "{all}"
        );
    }
    // A JSON field's point too; a field merely named `exec` is fine.
    let mqtt = "[mqtt]\nbroker = \"mqtt://h\"\n[[sensor]]\ndriver = \"mqtt\"\ntopic = \"t\"\n";
    let all = problems(&format!(
        "{mqtt}name = \"exec\"\njson = {{ door = \"/d\", x = \"/x\" }}\n"
    ))
    .join("\n");
    assert!(
        all.contains("point \"exec.door\": names starting with"),
        "{all}"
    );
    check(&format!(
        "{mqtt}name = \"a\"\njson = {{ x = \"/x\", exec = \"/y\" }}\n"
    ))
    .expect("valid");
    // The names the bridge's own topics use.
    let all = problems("[[compute]]\nname = \"availability\"\nexpr = \"1\"\n").join("\n");
    assert!(
        all.contains("point \"availability\": the name is the agent's own"),
        "{all}"
    );
    let all = problems(&format!(
        "{mqtt}name = \"availability\"\njson = {{ availability = \"/a\", x = \"/x\" }}\n"
    ))
    .join("\n");
    assert!(
        all.contains("point \"availability\": the name is the agent's own"),
        "{all}"
    );
    let all = problems("[node]\nname = \"bridge\"\n").join("\n");
    assert!(
        all.contains("node.name \"bridge\" is the agent's own"),
        "{all}"
    );
}

#[test]
fn the_news_port_follows_the_beacon_port_unless_set_and_is_a_port_of_its_own() {
    let config = check("[mesh]\nport = 30000\nsync_port = 30001\n").expect("valid");
    assert_eq!(config.mesh.news_port, 30002);
    let config = check("[mesh]\nnews_port = 31000\n").expect("valid");
    assert_eq!(config.mesh.news_port, 31000);
    assert_eq!(
        problems("[mesh]\nnews_port = 20195\n"),
        vec!["2:13: mesh.news_port must differ from mesh.port (20194) and mesh.sync_port (20195)"]
    );
    assert_eq!(
        problems("[mesh]\nport = 30000\nsync_port = 30002\n"),
        vec!["2:8: mesh.news_port is mesh.port + 2 unless set, and 30002 is not free here: set mesh.news_port"]
    );
    assert_eq!(
        problems("[mesh]\nport = 65535\n"),
        vec!["2:8: mesh.news_port is mesh.port + 2 unless set, and 65537 is not free here: set mesh.news_port"]
    );
    check("[mesh]\nport = 65535\nnews_port = 65534\n").expect("valid");
}
