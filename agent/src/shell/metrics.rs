//! `GET /metrics`: the Prometheus text exposition (format 0.0.4), written by
//! hand (a few `write!`s are lighter than any metrics crate).
//!
//! - every numeric point as a gauge of its quantity in its unit, e.g.
//!   `shoal_temperature_celsius{node="hall",sensor="climate.temperature"}`;
//!   points in error as `shoal_point_error{node,sensor} 1`;
//! - `shoal_node_state{node,state}` 1 for each known node's state, and
//!   `shoal_node_hops{node}`;
//! - frames and bytes in and out, frames dropped by reason, route and
//!   command counters (counters end in `_total`);
//! - `shoal_sync_latency_seconds`: a histogram of how old a remote point's
//!   value was when it arrived here;
//! - rule actions and executor runs by outcome; API requests, refused
//!   writes, and connections closed at once by reason
//!   (`shoal_api_connections_refused_total{reason="full"|"per_client"}`);
//!   configuration reloads (`shoal_config_reloads_total{result="applied"|"failed"}`).

use super::api::ApiStats;
use super::runs::RunRecord;
use shoal_core::peers::PeerState;
use shoal_core::time::Instant;
use shoal_core::wire::Value;
use shoal_core::{Node, Stats};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Upper bounds of the sync latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Counters the agent keeps for `/metrics` beyond the core's `Stats`.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Sync latency: counts per bucket (the last is +Inf), sum and count.
    latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
    latency_count: u64,
    /// Rule actions by rule.
    pub rule_actions: BTreeMap<String, u64>,
    /// Executor runs by (executor, outcome).
    pub executor_runs: BTreeMap<(String, String), u64>,
    /// Configuration reloads (SIGHUP) applied.
    pub reloads: u64,
    /// Configuration reloads refused (a file that does not validate or
    /// cannot be read, or no file).
    pub reloads_failed: u64,
    /// Datagrams dropped at send: the socket's send buffer was full.
    pub send_dropped: u64,
}

impl Counters {
    /// An executor run ended.
    pub fn count_run(&mut self, record: &RunRecord) {
        *self
            .executor_runs
            .entry((record.executor.clone(), record.outcome.clone()))
            .or_insert(0) += 1;
    }

    /// A remote point value arrived `seconds` after its reading.
    pub fn observe_latency(&mut self, seconds: f64) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket] += 1;
        self.latency_sum += seconds;
        self.latency_count += 1;
    }
}

/// A metric or label name part: `[a-zA-Z0-9_]`, others become `_`.
fn sanitize(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value, escaped.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The base unit suffix of a unit symbol.
fn unit_suffix(unit: &str) -> &'static str {
    match unit {
        "°C" | "C" => "_celsius",
        "%" => "_percent",
        "hPa" => "_hectopascals",
        "Pa" => "_pascals",
        "lx" => "_lux",
        "V" => "_volts",
        "A" => "_amperes",
        "W" => "_watts",
        "s" => "_seconds",
        "B" => "_bytes",
        "ppm" => "_ppm",
        _ => "",
    }
}

/// Every family's samples, by family name: (help, type, samples).
type Families = BTreeMap<String, (String, &'static str, Vec<String>)>;

fn add(families: &mut Families, name: &str, help: &str, kind: &'static str, sample: String) {
    families
        .entry(name.to_owned())
        .or_insert_with(|| (help.to_owned(), kind, Vec::new()))
        .2
        .push(sample);
}

/// The whole exposition.
pub fn render(
    node: &Node,
    now: Instant,
    counters: &Counters,
    api: &ApiStats,
    mqtt: Option<&super::mqtt::Bridge>,
    sensor_errors: u64,
    exports: &super::export::Exports,
) -> String {
    let mut families = Families::new();
    point_samples(&mut families, node);
    node_samples(&mut families, node, now);
    wire_samples(&mut families, node.stats());
    agent_samples(&mut families, counters, api);
    let name = "shoal_sensor_errors_total";
    let help = "Failed sensor reads and error values read (bad messages, missing fields)";
    add(
        &mut families,
        name,
        help,
        "counter",
        format!("{name} {sensor_errors}"),
    );
    for (url, values) in exports.metrics() {
        let names = [
            (
                "shoal_export_sent_total",
                "Samples an engine accepted",
                "counter",
            ),
            (
                "shoal_export_dropped_total",
                "Samples dropped: the buffer was full while the engine was down",
                "counter",
            ),
            (
                "shoal_export_rejected_total",
                "Samples an engine refused (HTTP 400), dropped",
                "counter",
            ),
            (
                "shoal_export_failures_total",
                "Requests that failed (retried with backoff)",
                "counter",
            ),
            (
                "shoal_export_pending",
                "Samples waiting to be sent",
                "gauge",
            ),
        ];
        for ((name, help, kind), value) in names.into_iter().zip(values) {
            let sample = format!("{name}{{export=\"{}\"}} {value}", escape(&url));
            add(&mut families, name, help, kind, sample);
        }
    }
    for (name, help, kind, value) in mqtt.map(|bridge| bridge.metrics()).unwrap_or_default() {
        let name = format!("shoal_mqtt_{name}");
        let sample = format!("{name} {value}");
        add(&mut families, &name, help, kind, sample);
    }
    let mut out = String::new();
    write_families(&mut out, &families);
    write_latency(&mut out, counters);
    out
}

/// Every numeric point as a gauge of its quantity; points in error.
fn point_samples(families: &mut Families, node: &Node) {
    for origin in node.store().origins().values() {
        for (name, point) in &origin.points {
            let labels = format!(
                "node=\"{}\",sensor=\"{}\"",
                escape(&origin.name),
                escape(name)
            );
            let value = match &point.value {
                Value::Float(v) => *v,
                Value::Int(v) => *v as f64,
                Value::Bool(b) => f64::from(u8::from(*b)),
                Value::Error(_) => {
                    add(
                        families,
                        "shoal_point_error",
                        "1 for a point whose sensor is failing",
                        "gauge",
                        format!("shoal_point_error{{{labels}}} 1"),
                    );
                    continue;
                }
                Value::Text(_) => continue,
            };
            let quantity = name.rsplit('.').next().unwrap_or(name);
            let family = format!("shoal_{}{}", sanitize(quantity), unit_suffix(&point.unit));
            let help = format!(
                "Points named {quantity} in {}",
                if point.unit.is_empty() {
                    "no unit"
                } else {
                    point.unit.as_str()
                }
            );
            add(
                families,
                &family,
                &help,
                "gauge",
                format!("{family}{{{labels}}} {value}"),
            );
        }
    }
}

/// Each known node's state and hops.
fn node_samples(families: &mut Families, node: &Node, now: Instant) {
    for (id, reach) in node.nodes(now) {
        let name = escape(
            &node
                .node_name(id)
                .map_or_else(|| id.to_string(), |n| n.to_string()),
        );
        for state in [
            PeerState::Healthy,
            PeerState::Suspect,
            PeerState::Unreachable,
            PeerState::Left,
        ] {
            add(
                families,
                "shoal_node_state",
                "1 for the state each known node is in",
                "gauge",
                format!(
                    "shoal_node_state{{node=\"{name}\",state=\"{}\"}} {}",
                    state.as_str(),
                    u8::from(state == reach.state)
                ),
            );
        }
        if matches!(reach.state, PeerState::Healthy | PeerState::Suspect) {
            add(
                families,
                "shoal_node_hops",
                "Hops to each reachable node (0: this one)",
                "gauge",
                format!("shoal_node_hops{{node=\"{name}\"}} {}", reach.hops),
            );
        }
    }
}

/// One counter per value of one label.
fn labelled<L: std::fmt::Display>(
    families: &mut Families,
    name: &str,
    help: &str,
    label: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) {
    for (value, count) in samples {
        add(
            families,
            name,
            help,
            "counter",
            format!(
                "{name}{{{label}=\"{}\"}} {count}",
                escape(&value.to_string())
            ),
        );
    }
}

/// The core's counters: frames, bytes, drops, joins, routes, commands.
fn wire_samples(families: &mut Families, stats: &Stats) {
    let directions = [("in", stats.frames_in), ("out", stats.frames_out)];
    let help = "Datagrams received and sent";
    labelled(
        families,
        "shoal_frames_total",
        help,
        "direction",
        directions,
    );
    let bytes = [("in", stats.bytes_in), ("out", stats.bytes_out)];
    let help = "Bytes received and sent";
    labelled(families, "shoal_bytes_total", help, "direction", bytes);
    let dropped = stats.dropped.iter().map(|(reason, n)| (reason, *n));
    let help = "Datagrams dropped, by reason";
    labelled(
        families,
        "shoal_frames_dropped_total",
        help,
        "reason",
        dropped,
    );
    let joins = stats.joins.iter().map(|(outcome, n)| (outcome, *n));
    let help = "Join requests, by outcome";
    labelled(
        families,
        "shoal_join_requests_total",
        help,
        "outcome",
        joins,
    );
    for (name, help, value) in [
        ("shoal_routes_sent_total", "Route advertisement frames sent", stats.routes_sent),
        ("shoal_commands_relayed_total", "Commands and results relayed for others", stats.commands_relayed),
        ("shoal_commands_rate_limited_total", "Commands refused by the per-asker rate limit", stats.commands_rate_limited),
        ("shoal_commands_hop_limit_total", "Commands dropped at their hop limit", stats.commands_hop_limit),
        ("shoal_signatures_invalid_total", "Commands, results and goodbyes whose signature or key does not match the node they speak for", stats.signatures_invalid),
        ("shoal_commands_stale_total", "Commands refused: for another incarnation of this node or of the asker, or from an unknown asker", stats.commands_stale),
        ("shoal_commands_replayed_total", "Commands refused: that request already ran here", stats.commands_replayed),
        ("shoal_command_results_refused_total", "Results refused: not from the node asked, or not for this incarnation", stats.results_refused),
        ("shoal_farewells_stale_total", "Goodbyes dropped: of an ended incarnation, an unknown node, or this node", stats.farewells_stale),
        ("shoal_history_queries_sent_total", "History pages this node asked of other nodes", stats.history_queries_sent),
        ("shoal_history_queries_unanswered_total", "History pages asked of other nodes that got no answer in time", stats.history_queries_unanswered),
        ("shoal_history_queries_served_total", "History pages this node answered for other nodes", stats.history_queries_served),
        ("shoal_history_relayed_total", "History queries and pages relayed for others", stats.history_relayed),
        ("shoal_history_rate_limited_total", "History queries refused by the per-asker rate limit", stats.history_rate_limited),
        ("shoal_history_dropped_total", "History queries and pages dropped: duplicates, hop limit, no route, or not for a query of ours", stats.history_dropped),
    ] {
        add(families, name, help, "counter", format!("{name} {value}"));
    }
}

/// The agent's counters: API, reloads, rule actions, executor runs.
fn agent_samples(families: &mut Families, counters: &Counters, api: &ApiStats) {
    for (name, help, value) in [
        (
            "shoal_api_requests_total",
            "HTTP API requests",
            api.requests.get(),
        ),
        (
            "shoal_api_unauthorized_total",
            "API writes refused for a missing or wrong token",
            api.unauthorized.get(),
        ),
        (
            "shoal_send_dropped_total",
            "Datagrams dropped at send: the socket's send buffer was full",
            counters.send_dropped,
        ),
    ] {
        add(families, name, help, "counter", format!("{name} {value}"));
    }
    let refused = [
        ("full", api.refused_connections.get()),
        ("per_client", api.refused_per_client.get()),
    ];
    let help = "API connections closed at once: every slot taken, or the client address's share";
    labelled(
        families,
        "shoal_api_connections_refused_total",
        help,
        "reason",
        refused,
    );
    let reloads = [
        ("applied", counters.reloads),
        ("failed", counters.reloads_failed),
    ];
    let help =
        "Configuration reloads (SIGHUP): applied, or refused with the running configuration kept";
    labelled(
        families,
        "shoal_config_reloads_total",
        help,
        "result",
        reloads,
    );
    let actions = counters.rule_actions.iter().map(|(rule, n)| (rule, *n));
    let help = "Executor actions asked for by each rule";
    labelled(families, "shoal_rule_actions_total", help, "rule", actions);
    for ((executor, outcome), count) in &counters.executor_runs {
        add(
            families,
            "shoal_executor_runs_total",
            "Executor runs, by outcome",
            "counter",
            format!(
                "shoal_executor_runs_total{{executor=\"{}\",outcome=\"{}\"}} {count}",
                escape(executor),
                escape(outcome)
            ),
        );
    }
}

fn write_families(out: &mut String, families: &Families) {
    for (name, (help, kind, samples)) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for sample in samples {
            let _ = writeln!(out, "{sample}");
        }
    }
}

/// The sync latency histogram.
fn write_latency(out: &mut String, counters: &Counters) {
    let name = "shoal_sync_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Age of a remote point's value when it arrived here"
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += counters.latency_buckets[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += counters.latency_buckets[LATENCY_BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", counters.latency_sum);
    let _ = writeln!(out, "{name}_count {}", counters.latency_count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::executor::Finished;
    use shoal_core::wire::Outcome;

    #[test]
    fn names_and_labels_are_made_valid() {
        assert_eq!(sanitize("climate.temperature"), "climate_temperature");
        assert_eq!(sanitize("2nd-floor"), "_2nd_floor");
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(unit_suffix("°C"), "_celsius");
    }

    fn lone_node() -> Node {
        let identity = shoal_core::Identity {
            key: shoal_core::sign::NodeKey::from_seed([1; 32]),
            name: shoal_core::wire::name("me").expect("valid"),
            incarnation: 1,
        };
        Node::new(identity, shoal_core::Config::default(), 1, Instant::ZERO).expect("valid")
    }

    #[test]
    fn executor_runs_are_labelled_by_outcome_in_words() {
        let mut counters = Counters::default();
        for outcome in [Outcome::Exited(0), Outcome::Exited(3), Outcome::TimedOut] {
            let finished = Finished {
                outcome,
                output: String::new(),
                duration: std::time::Duration::from_millis(5),
                publish: None,
                switched: None,
            };
            counters.count_run(&RunRecord::ended(
                0,
                "fan_on".into(),
                "me".into(),
                &finished,
            ));
        }
        let text = render(
            &lone_node(),
            Instant::ZERO,
            &counters,
            &ApiStats::default(),
            None,
            0,
            &Default::default(),
        );
        for label in ["exit 0", "exit 3", "timed out"] {
            let sample =
                format!("shoal_executor_runs_total{{executor=\"fan_on\",outcome=\"{label}\"}} 1\n");
            assert!(text.contains(&sample), "{sample} in\n{text}");
        }
    }

    #[test]
    fn the_latency_histogram_is_cumulative() {
        let mut counters = Counters::default();
        for seconds in [0.005, 0.2, 0.2, 30.0, f64::NAN, -1.0] {
            counters.observe_latency(seconds);
        }
        let api = ApiStats::default();
        api.refused_per_client.set(3);
        let text = render(
            &lone_node(),
            Instant::ZERO,
            &counters,
            &api,
            None,
            0,
            &Default::default(),
        );
        assert!(
            text.contains("shoal_sync_latency_seconds_bucket{le=\"0.01\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("shoal_sync_latency_seconds_bucket{le=\"0.25\"} 3\n"));
        assert!(text.contains("shoal_sync_latency_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("shoal_sync_latency_seconds_count 4\n"));
        assert!(text.contains("shoal_node_state{node=\"me\",state=\"HEALTHY\"} 1\n"));
        assert!(text.contains("shoal_api_connections_refused_total{reason=\"per_client\"} 3\n"));
    }
}
