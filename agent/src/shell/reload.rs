//! SIGHUP: what of a re-read configuration file applies while running.
//!
//! Sensors, actuators, executors, rules and derived points are reloaded
//! (`Agent::reload` in `agent.rs` hands them to their owners). What the
//! agent built its sockets, identity, key, API or tables from is fixed for
//! the life of the process: a change to it is named in the log
//! ([`restart_needed`]) and not applied, and the configuration in effect
//! ([`in_effect`]) keeps the running value, so the next reload names it
//! again until the agent is restarted. A file that does not validate is
//! refused whole; nothing of it applies.

use shoal_config::{ApiSection, Config, LimitsSection, MeshSection, NodeSection, StateSection};

/// The settings that differ between `running` and `new` and take effect
/// only at a restart, as dotted keys (`mesh.port`), in file order.
pub fn restart_needed(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |key: &'static str, same: bool| {
        if !same {
            changed.push(key);
        }
    };
    // Destructured in full: a new setting must be sorted into reloadable
    // or not before this compiles.
    let NodeSection { name } = &running.node;
    check("node.name", *name == new.node.name);
    let MeshSection {
        port,
        bind,
        sync_port,
        news_port,
        broadcast,
        peers,
        beacon_interval,
        suspect_after,
        unreachable_after,
        prune_after,
        key_file,
        open,
    } = &running.mesh;
    let mesh = &new.mesh;
    check("mesh.port", *port == mesh.port);
    check("mesh.bind", *bind == mesh.bind);
    check("mesh.sync_port", *sync_port == mesh.sync_port);
    // Unless set, the news port follows the beacon port: named only when
    // it moved by itself.
    let follows = |port: u16, news: u16| u32::from(news) == u32::from(port) + 2;
    check(
        "mesh.news_port",
        *news_port == mesh.news_port
            || (follows(*port, *news_port) && follows(mesh.port, mesh.news_port)),
    );
    check("mesh.broadcast", *broadcast == mesh.broadcast);
    check("mesh.peers", *peers == mesh.peers);
    check(
        "mesh.beacon_interval",
        *beacon_interval == mesh.beacon_interval,
    );
    check("mesh.suspect_after", *suspect_after == mesh.suspect_after);
    check(
        "mesh.unreachable_after",
        *unreachable_after == mesh.unreachable_after,
    );
    check("mesh.prune_after", *prune_after == mesh.prune_after);
    check("mesh.key_file", *key_file == mesh.key_file);
    check("mesh.open", *open == mesh.open);
    let ApiSection { listen, token_file } = &running.api;
    check("api.listen", *listen == new.api.listen);
    check("api.token_file", *token_file == new.api.token_file);
    let StateSection { dir } = &running.state;
    check("state.dir", *dir == new.state.dir);
    let LimitsSection {
        max_nodes,
        max_points_per_node,
        history_per_point,
    } = &running.limits;
    check("history.retain", running.history == new.history);
    check("mqtt", running.mqtt == new.mqtt);
    let mqtt_sensors = |config: &Config| -> Vec<shoal_config::SensorSection> {
        let sensors = config.sensors.iter().filter(|s| s.driver == "mqtt");
        sensors.cloned().collect()
    };
    check(
        "sensors with driver = \"mqtt\"",
        mqtt_sensors(running) == mqtt_sensors(new),
    );
    check("limits.max_nodes", *max_nodes == new.limits.max_nodes);
    check(
        "limits.max_points_per_node",
        *max_points_per_node == new.limits.max_points_per_node,
    );
    check(
        "limits.history_per_point",
        *history_per_point == new.limits.history_per_point,
    );
    changed
}

/// The configuration in effect after reloading `new` over `running`: the
/// reloadable sections of `new`, the rest as running.
pub fn in_effect(running: &Config, new: Config) -> Config {
    let Config {
        node: _,
        mesh: _,
        api: _,
        state: _,
        limits: _,
        sensors,
        actuators,
        executors,
        rules,
        computes,
        mqtt: _,
        exports,
        history: _,
        warnings,
    } = new;
    // `mqtt` sensors live in the bridge, built at start: they stay as running.
    let sensors = sensors
        .into_iter()
        .filter(|s| s.driver != "mqtt")
        .chain(
            running
                .sensors
                .iter()
                .filter(|s| s.driver == "mqtt")
                .cloned(),
        )
        .collect();
    Config {
        node: running.node.clone(),
        mesh: running.mesh.clone(),
        api: running.api.clone(),
        state: running.state.clone(),
        limits: running.limits.clone(),
        sensors,
        actuators,
        executors,
        rules,
        computes,
        mqtt: running.mqtt.clone(),
        exports,
        history: running.history.clone(),
        warnings,
    }
}

/// What a reload does to one kind of section, by name: `added x`,
/// `changed y`, `removed z` (unchanged ones are left out).
pub fn changes<T: PartialEq>(
    kind: &str,
    running: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
) -> Vec<String> {
    let find = |list: &'_ [T], wanted: &str| list.iter().position(|t| name(t) == wanted);
    let mut out = Vec::new();
    for item in new {
        match find(running, name(item)) {
            None => out.push(format!("{kind} {} added", name(item))),
            Some(index) if running[index] != *item => {
                out.push(format!("{kind} {} changed", name(item)));
            }
            Some(_) => {}
        }
    }
    for item in running {
        if find(new, name(item)).is_none() {
            out.push(format!("{kind} {} removed", name(item)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[node]
name = "hall"
[mesh]
port = 20194
sync_port = 20195
bind = "127.0.0.1"
broadcast = ["127.255.255.255"]
peers = []
[api]
listen = "127.0.0.1:8080"
token_file = "/tmp/shoal-reload-test/api.token"
[state]
dir = "/tmp/shoal-reload-test"
[[sensor]]
name = "temperature"
driver = "sim"
[[executor]]
name = "fan_on"
action = { command = ["/bin/true"] }
[[rule]]
name = "cool"
when = "self/temperature > 26"
do = "fan_on"
"#;

    fn parse(text: &str) -> Config {
        match shoal_config::parse(text, Path::new("test.toml")) {
            Ok(config) => config,
            Err(problems) => panic!("{problems}"),
        }
    }

    /// `BASE` with `line` put in `[section]` (replacing the key if set).
    fn with(section: &str, line: &str) -> Config {
        let key = line.split('=').next().unwrap_or_default().trim();
        let mut out = String::new();
        let mut current = "";
        for text in BASE.lines() {
            if text.starts_with('[') {
                current = text;
            }
            let is_key = text.split('=').next().unwrap_or_default().trim() == key;
            if current == section && is_key {
                continue;
            }
            out.push_str(text);
            out.push('\n');
            if text == section {
                out.push_str(line);
                out.push('\n');
            }
        }
        parse(&out)
    }

    #[test]
    fn every_setting_that_needs_a_restart_is_named() {
        let running = parse(BASE);
        assert!(restart_needed(&running, &running).is_empty());
        let cases = [
            ("[node]", "name = \"kitchen\"", "node.name"),
            // The news port follows (unless set), and is not named too.
            ("[mesh]", "port = 20200", "mesh.port"),
            ("[mesh]", "port = 20200\nnews_port = 20196", "mesh.port"),
            ("[mesh]", "bind = \"127.0.0.2\"", "mesh.bind"),
            ("[mesh]", "sync_port = 20201", "mesh.sync_port"),
            ("[mesh]", "news_port = 20202", "mesh.news_port"),
            ("[mesh]", "broadcast = [\"auto\"]", "mesh.broadcast"),
            ("[mesh]", "peers = [\"10.0.0.9:20195\"]", "mesh.peers"),
            (
                "[mesh]",
                "beacon_interval = \"500ms\"",
                "mesh.beacon_interval",
            ),
            ("[mesh]", "suspect_after = \"2500ms\"", "mesh.suspect_after"),
            (
                "[mesh]",
                "unreachable_after = \"9s\"",
                "mesh.unreachable_after",
            ),
            ("[mesh]", "prune_after = \"2h\"", "mesh.prune_after"),
            ("[mesh]", "key_file = \"/tmp/other.key\"", "mesh.key_file"),
            ("[mesh]", "open = true", "mesh.open"),
            ("[api]", "listen = \"127.0.0.1:8081\"", "api.listen"),
            (
                "[api]",
                "token_file = \"/tmp/other.token\"",
                "api.token_file",
            ),
            ("[state]", "dir = \"/tmp/shoal-other\"", "state.dir"),
            ("[limits]", "max_nodes = 64", "limits.max_nodes"),
            (
                "[limits]",
                "max_points_per_node = 64",
                "limits.max_points_per_node",
            ),
            (
                "[limits]",
                "history_per_point = 8",
                "limits.history_per_point",
            ),
        ];
        let mut limits = BASE.to_owned();
        limits.push_str("[limits]\n");
        // `[mqtt]` itself, and its sensors (against a running [mqtt]).
        let broker = "[mqtt]\nbroker = \"mqtt://127.0.0.1\"\n";
        let new = parse(&format!("{BASE}{broker}"));
        assert_eq!(restart_needed(&running, &new), ["mqtt"]);
        let with_mqtt = parse(&format!("{BASE}{broker}"));
        let source = "[[sensor]]\nname = \"z\"\ndriver = \"mqtt\"\ntopic = \"z2m/z\"\n";
        let new = parse(&format!("{BASE}{broker}{source}"));
        assert_eq!(
            restart_needed(&with_mqtt, &new),
            ["sensors with driver = \"mqtt\""]
        );
        assert!(restart_needed(&with_mqtt, &in_effect(&with_mqtt, new)).is_empty());
        for (section, line, key) in cases {
            let new = if section == "[limits]" {
                parse(&format!("{limits}{line}\n"))
            } else {
                with(section, line)
            };
            assert_eq!(restart_needed(&running, &new), [key], "{line}");
            // Not applied: the running value stays in effect.
            let effect = in_effect(&running, new);
            assert!(restart_needed(&running, &effect).is_empty(), "{line}");
        }
    }

    #[test]
    fn sensors_rules_and_executors_reload_without_a_restart() {
        let running = parse(BASE);
        let text = BASE.replace("self/temperature > 26", "self/temperature > 24")
            + "[[sensor]]\nname = \"outdoor\"\ndriver = \"sim\"\n[[actuator]]\nname = \"fan\"\ndriver = \"sim\"\n[[compute]]\nname = \"double\"\nexpr = \"self/temperature * 2\"\n";
        let new = parse(&text);
        assert!(restart_needed(&running, &new).is_empty());
        let effect = in_effect(&running, new.clone());
        assert_eq!(effect, new, "all of it applies");
        assert_eq!(
            changes("rule", &running.rules, &new.rules, |r| &r.name),
            ["rule cool changed"]
        );
        assert_eq!(
            changes("sensor", &new.sensors, &running.sensors, |s| &s.name),
            ["sensor outdoor removed"]
        );
        assert!(changes("executor", &running.executors, &new.executors, |e| &e.name).is_empty());
    }
}
