//! `http`, `command` and `websocket` sensors: what is accepted, and each
//! mistake named with its place.

use super::super::tests::{check, problems};
use super::*;

#[test]
fn urls_split_into_host_port_and_path() {
    let url = parse_url(
        "http://192.168.1.40/rpc/Switch.GetStatus?id=0",
        "http",
        "https",
    )
    .expect("valid");
    assert_eq!(
        url,
        Url {
            host: "192.168.1.40".into(),
            port: 80,
            path: "/rpc/Switch.GetStatus?id=0".into()
        }
    );
    let url = parse_url("ws://[::1]:9000", "ws", "wss").expect("valid");
    assert_eq!(
        (url.host.as_str(), url.port, url.path.as_str()),
        ("::1", 9000, "/")
    );
    assert_eq!(url.authority(), "[::1]:9000");
    let url = parse_url("http://plug.local:8080?x=1", "http", "https").expect("valid");
    assert_eq!(url.path, "/?x=1");
    for (bad, why) in [
        ("https://api.example.com/", "https:// is not supported"),
        ("ftp://x/", "must look like http://"),
        ("http://", "no valid host"),
        ("http://a b/", "spaces"),
        ("http://user:pw@plug/", "credentials"),
        ("http://plug:0/", "port must be 1 to 65535"),
        ("http://::1/", "IPv6"),
        ("http://[::1]junk/x", "only :PORT may follow"),
    ] {
        let error = parse_url(bad, "http", "https").expect_err(bad);
        assert!(error.contains(why), "{bad}: {error}");
    }
    assert!(parse_url("wss://feed/", "ws", "wss")
        .expect_err("tls")
        .contains("wss:// is not supported"));
}

#[test]
fn an_http_sensor_takes_a_url_pointers_units_headers_and_credentials() {
    let config = check(
        "[[sensor]]\nname = \"plug\"\ndriver = \"http\"\nurl = \"http://192.168.1.40/rpc/Switch.GetStatus?id=0\"\n\
         json = { power = \"/apower\", voltage = \"/voltage\", on = \"/output\" }\n\
         unit = { power = \"W\", voltage = \"V\" }\nheaders = { Accept = \"application/json\" }\n\
         username = \"admin\"\npassword_file = \"/etc/shoal/plug.password\"\ntimeout = \"2s\"\n",
    )
    .expect("valid");
    let sensor = &config.sensors[0];
    assert_eq!(sensor.interval, crate::defaults::SENSOR_INTERVAL);
    assert_eq!(sensor.json.len(), 3);
    assert_eq!(
        sensor.units.get("plug.power").map(String::as_str),
        Some("W")
    );
    assert_eq!(
        sensor.units.get("plug.voltage").map(String::as_str),
        Some("V")
    );
    assert_eq!(sensor.units.get("plug.on"), None);
    assert_eq!(
        sensor.headers,
        vec![("Accept".to_owned(), "application/json".to_owned())]
    );
    assert_eq!(
        sensor.settings.get("username"),
        Some(&Setting::Text("admin".to_owned()))
    );
    // One unit for every point, and one point without json.
    let config =
        check("[[sensor]]\nname = \"t\"\ndriver = \"http\"\nurl = \"http://h/t\"\nunit = \"°C\"\n")
            .expect("valid");
    assert_eq!(
        config.sensors[0].units.get("t").map(String::as_str),
        Some("°C")
    );
}

#[test]
fn a_command_sensor_takes_an_argv_and_a_websocket_a_ws_url() {
    let config = check(
        "[[sensor]]\nname = \"fan\"\ndriver = \"command\"\ncommand = [\"/usr/bin/fan-speed\", \"--json\", \"a,b\"]\njson = \"/rpm\"\nunit = \"rpm\"\n\
         [[sensor]]\nname = \"feed\"\ndriver = \"websocket\"\nurl = \"ws://127.0.0.1:9000/feed\"\njson = { price = \"/p\" }\n",
    )
    .expect("valid");
    assert_eq!(
        config.sensors[0].argv,
        ["/usr/bin/fan-speed", "--json", "a,b"]
    );
    assert_eq!(
        config.sensors[0].units.get("fan").map(String::as_str),
        Some("rpm")
    );
    assert_eq!(
        config.sensors[1].json,
        vec![("feed".to_owned(), "/p".to_owned())]
    );
    let pushed = crate::defaults::MQTT_SENSOR_INTERVAL;
    assert_eq!(config.sensors[1].interval, pushed, "a feed's interval: 1 s");
}

#[test]
fn bad_sources_are_each_named_with_their_place() {
    for (section, expected) in [
        ("driver = \"http\"\n", "a http sensor needs `url`"),
        ("driver = \"http\"\nurl = \"https://api/\"\n", "sensor.url \"https://api/\": https:// is not supported"),
        ("driver = \"http\"\nurl = 3\n", "sensor.url must be a string"),
        ("driver = \"websocket\"\nurl = \"http://x/\"\n", "must look like ws://"),
        ("driver = \"http\"\nurl = \"http://x/\"\nheaders = { \"Bad Name\" = \"x\" }\n", "sensor.headers.Bad Name: a header name"),
        ("driver = \"http\"\nurl = \"http://x/\"\nheaders = { X = \"a\\r\\nInjected: 1\" }\n", "sensor.headers.X"),
        ("driver = \"http\"\nurl = \"http://x/\"\nheaders = \"x\"\n", "sensor.headers must be a table"),
        ("driver = \"http\"\nurl = \"http://x/\"\nheaders = { host = \"y\" }\n", "sensor.headers.host: the agent sets host itself"),
        ("driver = \"command\"\n", "a command sensor needs `command"),
        ("driver = \"command\"\ncommand = \"/bin/date\"\n", "sensor.command must be a list"),
        ("driver = \"command\"\ncommand = []\n", "sensor.command needs a program"),
        ("driver = \"command\"\ncommand = [1]\n", "sensor.command entries must be strings"),
        ("driver = \"http\"\nurl = \"http://x/\"\njson = { a = \"/a\", b = \"/b\" }\nunit = { c = \"W\" }\n", "sensor.unit.c: no json field \"c\""),
        ("driver = \"http\"\nurl = \"http://x/\"\nunit = \"much too long\"\n", "at most 8 bytes"),
        ("driver = \"http\"\nurl = \"http://x/\"\nunit = 3\n", "sensor.unit must be a string or a table"),
        ("driver = \"http\"\nurl = \"http://x/\"\njson = \"temp\"\n", "must be empty or start with /"),
        ("driver = \"websocket\"\nurl = \"ws://x/\"\ntopic = \"t\"\n", "unknown key"),
    ] {
        let text = format!("[[sensor]]\nname = \"s\"\n{section}");
        let all = problems(&text).join("\n");
        assert!(all.contains(expected), "{section}: {all}");
        let place = all.split(':').take(2).all(|n| n.parse::<u32>().is_ok());
        assert!(place, "line:col first: {all}");
    }
}
