//! The configuration file: its typed form, and the validator that turns TOML
//! text into it while collecting every problem with its line and column.
//!
//! Parsing keeps spans (`toml::de::DeTable`), then a schema walk checks key
//! names, types and values, applies defaults, and finally cross-checks
//! (a rule naming a missing executor, duplicate names, timings that cannot
//! work together). Nothing stops at the first error.

use crate::defaults as d;
use crate::duration::parse_duration;
use crate::expr::PointName;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

mod export;
mod mqtt;
mod sources;
pub use export::ExportSection;
pub use mqtt::{
    field_points, is_reserved_point, parse_broker, BridgeRole, MqttSection, RESERVED_NODE,
    RESERVED_POINT,
};
pub use sources::{parse_url, Url};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub col: usize,
    /// One sentence.
    pub message: String,
}

/// Every problem found in a file, in file order. `Display` prints one
/// `file:line:col: message` line per problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    /// The file the problems are in.
    pub file: PathBuf,
    /// The problems, by position.
    pub problems: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                problem.line,
                problem.col,
                problem.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read and is wrong; every problem is listed.
    #[error("{0}")]
    Invalid(Problems),
}

/// Where beacons are broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// Every up IPv4 interface's directed broadcast address.
    Auto,
    /// One explicit address, e.g. `127.255.255.255`.
    Address(Ipv4Addr),
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSection {
    /// The node's name; `None`: the hostname.
    pub name: Option<String>,
}

/// `[mesh]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSection {
    /// UDP beacon port.
    pub port: u16,
    /// Unicast address for sync traffic.
    pub bind: IpAddr,
    /// Unicast sync port.
    pub sync_port: u16,
    /// UDP port of broadcast news (values, goodbyes, beacons that ask
    /// something), read at once; routine beacons go to `port`, read in
    /// batches.
    pub news_port: u16,
    /// Where beacons go.
    pub broadcast: Vec<Broadcast>,
    /// Static peers beyond the LAN, `host:port`.
    pub peers: Vec<String>,
    /// Time between beacons.
    pub beacon_interval: Duration,
    /// Silence before SUSPECT.
    pub suspect_after: Duration,
    /// Silence before UNREACHABLE.
    pub unreachable_after: Duration,
    /// Time UNREACHABLE or LEFT before a neighbor is forgotten.
    pub prune_after: Duration,
    /// Mesh key file as configured; `None`: `mesh.key` in the state
    /// directory ([`Config::key_path`]). Created at first start if missing.
    pub key_file: Option<PathBuf>,
    /// No key at all: frames in clear and unauthenticated. Only with this
    /// set does a node run without a key.
    pub open: bool,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSection {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Token needed for writes and exec.
    pub token_file: PathBuf,
}

/// `[state]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSection {
    /// Where node id, incarnation, peers and last values live.
    pub dir: PathBuf,
}

/// `[history]`: this node's points kept on the device, downsampled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistorySection {
    /// How long quarter-hour buckets are kept (minute buckets: a day);
    /// zero: no history.
    pub retain: Duration,
}

/// `[limits]`: the bounds of every table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSection {
    /// Most nodes tracked.
    pub max_nodes: usize,
    /// Most points per node.
    pub max_points_per_node: usize,
    /// Most past values per point.
    pub history_per_point: usize,
}

/// A scalar setting of a sensor or actuator, kept for its driver to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    /// A string.
    Text(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A duration string, parsed.
    Duration(Duration),
}

/// `[[sensor]]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SensorSection {
    /// Point name within the node.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Sampling interval.
    pub interval: Duration,
    /// Minimum change worth publishing.
    pub deadband: f64,
    /// Driver settings (validated by name and type here, by value in `hal`).
    pub settings: BTreeMap<String, Setting>,
    /// Points taken from a JSON message (`json = "/pointer"` or a table of
    /// them), as (point name, JSON pointer); empty: the message is the value.
    pub json: Vec<(String, String)>,
    /// Units by point name, of a sensor whose values come as messages
    /// (`unit = "W"` for every point, or a table by `json` field). A
    /// point with a unit takes numbers only: text there is an error.
    pub units: BTreeMap<String, String>,
    /// `http`: extra request headers, (name, value).
    pub headers: Vec<(String, String)>,
    /// `command`: the program and its arguments (run without a shell).
    pub argv: Vec<String>,
}

/// `[[actuator]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ActuatorSection {
    /// Name.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Driver settings.
    pub settings: BTreeMap<String, Setting>,
    /// A switch in Home Assistant: its state is the point `switch.NAME`,
    /// and the executors `NAME.on` and `NAME.off` (remote) set it.
    pub mqtt: bool,
}

/// What an executor does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Drive an actuator.
    Actuator {
        /// The actuator's name.
        actuator: String,
        /// What to do with it.
        command: ActuatorAction,
    },
    /// Run a program (argv, no shell).
    Command(Vec<String>),
    /// POST to a URL.
    Webhook(String),
    /// Set a point of this node.
    Publish {
        /// The point's name.
        point: String,
        /// The value.
        value: f64,
    },
}

/// What an actuator executor does: `set = true`, `toggle = true`,
/// `pulse = "2s"` (on, then off again) or `duty = 0.4` (PWM).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActuatorAction {
    /// On or off.
    Set(bool),
    /// The other state.
    Toggle,
    /// On for this long, then off.
    Pulse(Duration),
    /// A PWM duty cycle, 0.0 to 1.0.
    Duty(f64),
}

/// `[[executor]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutorSection {
    /// Name.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Callable from other nodes.
    pub remote: bool,
    /// A button in Home Assistant, and runnable from the MQTT command
    /// topic (through the mesh, so it needs `remote` too).
    pub mqtt: bool,
    /// Longest run before it is stopped.
    pub timeout: Duration,
    /// What a second run does while one is running.
    pub policy: Policy,
}

/// What a run of an executor does while another run of it is going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Refused as busy (the default: a command never runs twice at once).
    #[default]
    Refuse,
    /// Waits for the running one to end, then runs.
    Queue,
}

/// An expression as written in the file and as parsed, once, when the file
/// was read (so nothing downstream parses it again or handles a parse error
/// that cannot happen).
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    /// The text, as written.
    pub text: String,
    /// The parsed expression.
    pub parsed: crate::expr::Expr,
}

/// `[[rule]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSection {
    /// Name.
    pub name: String,
    /// The condition.
    pub when: Expression,
    /// How long the condition must hold.
    pub hold_for: Duration,
    /// Executor run when it becomes true.
    pub run: String,
    /// Executor run when it becomes false.
    pub otherwise: Option<String>,
    /// Inputs older than this are unknown.
    pub stale_after: Option<Duration>,
    /// Executor run while an input is unknown.
    pub on_unknown: Option<String>,
    /// Hysteresis: once active, the rule stays active until this holds
    /// (without it, until `when` is false).
    pub until: Option<Expression>,
}

/// `[[compute]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeSection {
    /// Published as this node's point of this name.
    pub name: String,
    /// The expression.
    pub expr: Expression,
}

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[node]`.
    pub node: NodeSection,
    /// `[mesh]`.
    pub mesh: MeshSection,
    /// `[api]`.
    pub api: ApiSection,
    /// `[state]`.
    pub state: StateSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[[sensor]]`s.
    pub sensors: Vec<SensorSection>,
    /// `[[actuator]]`s.
    pub actuators: Vec<ActuatorSection>,
    /// `[[executor]]`s.
    pub executors: Vec<ExecutorSection>,
    /// `[[rule]]`s.
    pub rules: Vec<RuleSection>,
    /// `[[compute]]`s.
    pub computes: Vec<ComputeSection>,
    /// `[mqtt]`, if present.
    pub mqtt: Option<MqttSection>,
    /// `[[export]]`: this node's points to time-series engines.
    pub exports: Vec<ExportSection>,
    /// `[history]`.
    pub history: HistorySection,
    /// Things that work but are likely mistakes (`shoal check` shows them).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Where this node's mesh key lives: `mesh.key_file`, or `mesh.key` in
    /// the state directory. `None` for an open mesh (`mesh.open = true`).
    pub fn key_path(&self) -> Option<PathBuf> {
        if self.mesh.open {
            return None;
        }
        Some(
            self.mesh
                .key_file
                .clone()
                .unwrap_or_else(|| self.state.dir.join("mesh.key")),
        )
    }
}

/// The configuration used when no file exists: loopback-only networking
/// (broadcast to 127.255.255.255, API on 127.0.0.1), state under the system
/// state directory, and three simulated sensors so something works at once.
pub const EMBEDDED: &str = include_str!("embedded.toml");

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::File::open(path)
        .and_then(read_bounded)
        .map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
    parse(&text, path).map_err(LoadError::Invalid)
}

/// The largest file the agent reads (a config, a key, a token, a state
/// file): far beyond any real one, and small enough that `/dev/zero` or a
/// runaway log named by mistake is refused instead of read until memory
/// runs out.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads `file` as UTF-8 text of at most [`MAX_FILE_BYTES`].
pub fn read_bounded(file: impl std::io::Read) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "larger than {} KiB: not a file shoal writes or expects",
                MAX_FILE_BYTES / 1024
            ),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// The embedded default configuration.
pub fn embedded() -> Config {
    match parse(EMBEDDED, Path::new("<embedded>")) {
        Ok(config) => config,
        Err(problems) => unreachable!("the embedded config is tested to be valid: {problems}"),
    }
}

/// Validates `text` (named `file` in messages).
pub fn parse(text: &str, file: &Path) -> Result<Config, Problems> {
    let mut walker = Walker {
        text,
        line_starts: Vec::new(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let (document, syntax) = DeTable::parse_recoverable(text);
    for error in &syntax {
        let span = error.span().unwrap_or(0..0);
        let message = error.message().trim().trim_end_matches('.').to_owned();
        walker.problem(span, format!("TOML syntax: {message}"));
    }
    // A broken file's recovered tree only yields misleading follow-on errors.
    let config = if syntax.is_empty() {
        walker.document(document.get_ref(), document.span())
    } else {
        None
    };
    if walker.problems.is_empty() {
        if let Some(mut config) = config {
            config.warnings = walker.warnings;
            return Ok(config);
        }
    }
    // By position; at one position in the order they were found.
    let mut found: Vec<(usize, Problem)> = walker.problems.into_iter().enumerate().collect();
    crate::order::sort_by_key(&mut found, |(i, p)| (p.line, p.col, *i));
    let mut problems: Vec<Problem> = found.into_iter().map(|(_, p)| p).collect();
    problems.dedup();
    Err(Problems {
        file: file.to_owned(),
        problems,
    })
}

const SENSOR_DRIVERS: &[(&str, &[&str])] = &[
    (
        "sim",
        &[
            "waveform", "min", "max", "period", "unit", "seed", "value", "flaky",
        ],
    ),
    ("soc_temp", &["zone"]),
    ("system", &[]),
    ("bme280", &["bus", "address"]),
    ("bmp280", &["bus", "address"]),
    ("sht3x", &["bus", "address"]),
    ("bh1750", &["bus", "address"]),
    (
        "ads1115",
        &[
            "bus", "address", "channels", "gain", "scale", "offset", "unit",
        ],
    ),
    ("ds18b20", &["device"]),
    ("gpio_in", &["pin", "pull", "debounce", "mode"]),
    ("mqtt", &["topic", "json", "unit"]),
    (
        "http",
        &[
            "url",
            "json",
            "unit",
            "headers",
            "username",
            "password_file",
        ],
    ),
    ("command", &["command", "json", "unit"]),
    ("websocket", &["url", "json", "unit"]),
];

/// Drivers whose values come as messages (JSON or plain), mapped to points
/// by `json` pointers, with units by point.
pub const MESSAGE_DRIVERS: &[&str] = &["mqtt", "http", "command", "websocket"];
const SENSOR_COMMON: &[&str] = &[
    "name",
    "driver",
    "interval",
    "deadband",
    "max_interval",
    "timeout",
    "quantities",
];
/// I2C addresses each driver answers at (its datasheet's choices).
const I2C_ADDRESSES: &[(&str, &[i64])] = &[
    ("bme280", &[0x76, 0x77]),
    ("bmp280", &[0x76, 0x77]),
    ("sht3x", &[0x44, 0x45]),
    ("bh1750", &[0x23, 0x5c]),
    ("ads1115", &[0x48, 0x49, 0x4a, 0x4b]),
];
/// Quantities each sensor driver gives.
const QUANTITIES: &[(&str, &[&str])] = &[
    ("bme280", &["temperature", "humidity", "pressure"]),
    ("bmp280", &["temperature", "pressure"]),
    ("sht3x", &["temperature", "humidity"]),
    ("system", &["load1", "memory_used", "uptime", "disk_free"]),
    ("gpio_in", &["level", "count"]),
];
/// The ADS1115's full-scale ranges, in volts.
const ADS1115_GAINS: &[f64] = &[6.144, 4.096, 2.048, 1.024, 0.512, 0.256];
const ACTUATOR_DRIVERS: &[(&str, &[&str])] = &[
    ("gpio_out", &["pin", "active_low", "pulse"]),
    ("pwm", &["channel", "pin", "frequency"]),
    ("sim", &[]),
];

struct Walker<'t> {
    text: &'t str,
    /// Where each line starts (built at the first problem): a problem's
    /// line is a binary search, so thousands of problems stay linear.
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// An executor with its span and its actuator's span.
type LocatedExecutor = (ExecutorSection, Range<usize>, Option<Range<usize>>);

/// A rule with its span and the executor names it refers to, with theirs.
type LocatedRule = (RuleSection, Range<usize>, Vec<(String, Range<usize>)>);

fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Walker<'_> {
    fn warning(&mut self, span: Range<usize>, message: String) {
        let before = self.problems.len();
        self.problem(span, message);
        if let Some(problem) = self.problems.pop() {
            if self.problems.len() == before {
                self.warnings.push(problem);
            }
        }
    }

    fn problem(&mut self, span: Range<usize>, message: String) {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        if self.line_starts.is_empty() {
            self.line_starts.push(0);
            let newlines = self.text.match_indices('\n').map(|(at, _)| at + 1);
            self.line_starts.extend(newlines);
        }
        // The last line starting at or before `start`.
        let index = self.line_starts.partition_point(|&s| s <= start) - 1;
        let line_start = self.line_starts[index];
        let col = self.text[line_start..start].chars().count() + 1;
        self.problems.push(Problem {
            line: index + 1,
            col,
            message,
        });
    }

    fn document(&mut self, root: &DeTable<'_>, span: Range<usize>) -> Option<Config> {
        self.known_keys(
            root,
            "",
            &[
                "node", "mesh", "api", "state", "limits", "sensor", "actuator", "executor", "rule",
                "compute", "mqtt", "export", "history",
            ],
        );
        let empty = DeTable::new();
        let node = self.section(root, "node");
        let node_table = node.unwrap_or(&empty);
        self.known_keys(node_table, "node.", &["name"]);
        let node_name = self.string(node_table, "node.", "name");
        if let Some((name, name_span)) = &node_name {
            if !is_valid_name(name) {
                self.problem(
                    name_span.clone(),
                    format!("node.name {name:?} must be 1 to 32 of A-Z a-z 0-9 _ - ."),
                );
            } else if name == mqtt::RESERVED_NODE {
                self.problem(
                    name_span.clone(),
                    format!("node.name {name:?} is the agent's own (the MQTT topics {name}/NODE hold each node's bridge role)"),
                );
            }
        }

        let mesh = self.section(root, "mesh").unwrap_or(&empty);
        let mesh = self.mesh(mesh);
        let api = self.section(root, "api").unwrap_or(&empty);
        self.known_keys(api, "api.", &["listen", "token_file"]);
        let listen = self
            .parsed::<SocketAddr>(api, "api.", "listen", "an address like 127.0.0.1:8080")
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], d::API_PORT)));
        if listen.port() == 0 {
            let span = self.span_of(api, "listen").unwrap_or(0..0);
            self.problem(
                span,
                "api.listen needs a port: with port 0 the system picks one at each start, and \
                 no client could find the API"
                    .to_owned(),
            );
        }
        let token_file = self.string(api, "api.", "token_file");
        let state = self.section(root, "state").unwrap_or(&empty);
        self.known_keys(state, "state.", &["dir"]);
        let dir = self
            .string(state, "state.", "dir")
            .map_or_else(|| PathBuf::from(d::STATE_DIR), |(s, _)| PathBuf::from(s));
        // Without its own setting, the token lives in the state directory.
        let token_file =
            token_file.map_or_else(|| dir.join("api.token"), |(s, _)| PathBuf::from(s));
        let limits = self.section(root, "limits").unwrap_or(&empty);
        let limits = self.limits(limits);
        let history = self.section(root, "history").unwrap_or(&empty);
        self.known_keys(history, "history.", &["retain"]);
        let retain = self
            .duration(history, "history.", "retain")
            .unwrap_or(d::HISTORY_RETAIN);
        if !retain.is_zero()
            && !(Duration::from_secs(86_400)..=Duration::from_secs(366 * 86_400)).contains(&retain)
        {
            let span = self.span_of(history, "retain").unwrap_or(0..0);
            self.problem(
                span,
                "history.retain must be 1d to 366d, or 0s for no history".to_owned(),
            );
        }
        let history = HistorySection { retain };
        let mqtt = match self.section(root, "mqtt") {
            Some(table) => {
                let span = self.span_of(root, "mqtt").unwrap_or(0..0);
                Some(self.mqtt(table, span))
            }
            None => None,
        };

        let exports = self.array_of_tables(root, "export");
        let exports: Vec<(ExportSection, Range<usize>)> = exports
            .iter()
            .filter_map(|(t, s)| Some((self.export(t, s.clone())?, s.clone())))
            .collect();
        // One series per URL in /metrics: two exports to one URL would
        // also send every sample twice.
        self.unique(
            "export",
            exports
                .iter()
                .map(|(e, span)| (e.url_text.as_str(), span.clone())),
        );
        let exports: Vec<ExportSection> = exports.into_iter().map(|(e, _)| e).collect();

        let sensors = self.array_of_tables(root, "sensor");
        let sensors: Vec<(SensorSection, Range<usize>)> = sensors
            .iter()
            .filter_map(|(t, s)| self.sensor(t, s.clone()))
            .collect();
        let actuators = self.array_of_tables(root, "actuator");
        let actuators: Vec<(ActuatorSection, Range<usize>)> = actuators
            .iter()
            .filter_map(|(t, s)| self.actuator(t, s.clone()))
            .collect();
        let executors = self.array_of_tables(root, "executor");
        let executors: Vec<LocatedExecutor> = executors
            .iter()
            .filter_map(|(t, s)| self.executor(t, s.clone()))
            .collect();
        let rules = self.array_of_tables(root, "rule");
        let rules: Vec<LocatedRule> = rules
            .iter()
            .filter_map(|(t, s)| self.rule(t, s.clone()))
            .collect();
        let computes = self.array_of_tables(root, "compute");
        let computes: Vec<(ComputeSection, Range<usize>)> = computes
            .iter()
            .filter_map(|(t, s)| self.compute(t, s.clone()))
            .collect();

        // Cross-checks.
        self.unique(
            "sensor",
            sensors
                .iter()
                .map(|(s, span)| (s.name.as_str(), span.clone())),
        );
        self.unique(
            "actuator",
            actuators
                .iter()
                .map(|(a, span)| (a.name.as_str(), span.clone())),
        );
        self.unique(
            "executor",
            executors
                .iter()
                .map(|(e, span, _)| (e.name.as_str(), span.clone())),
        );
        self.unique(
            "rule",
            rules
                .iter()
                .map(|(r, span, _)| (r.name.as_str(), span.clone())),
        );
        let points: Vec<(&str, Range<usize>)> = sensors
            .iter()
            .map(|(s, span)| (s.name.as_str(), span.clone()))
            .chain(
                computes
                    .iter()
                    .map(|(c, span)| (c.name.as_str(), span.clone())),
            )
            .collect();
        for (point, span) in &points {
            self.reserved_point(point, span.clone());
        }
        for (sensor, span) in &sensors {
            for (point, _) in &sensor.json {
                self.reserved_point(point, span.clone());
            }
        }
        self.unique("point (sensor or compute)", points.into_iter());
        let actuator_names: BTreeSet<&str> =
            crate::order::set(actuators.iter().map(|(a, _)| a.name.as_str()));
        for (executor, _, actuator_span) in &executors {
            if let Action::Actuator { actuator, .. } = &executor.action {
                if !actuator_names.contains(actuator.as_str()) {
                    self.problem(
                        actuator_span.clone().unwrap_or(0..0),
                        format!(
                            "executor {:?} sets actuator {actuator:?}, which is not defined",
                            executor.name
                        ),
                    );
                }
            }
        }
        let executor_names: BTreeSet<&str> =
            crate::order::set(executors.iter().map(|(e, _, _)| e.name.as_str()));
        for (rule, _, references) in &rules {
            for (executor, span) in references {
                if !executor_names.contains(executor.as_str()) {
                    self.problem(
                        span.clone(),
                        format!(
                            "rule {:?} names executor {executor:?}, which is not defined",
                            rule.name
                        ),
                    );
                }
            }
        }
        if mqtt.is_none() {
            for (sensor, span) in sensors.iter().filter(|(s, _)| s.driver == "mqtt") {
                self.problem(
                    span.clone(),
                    format!(
                        "sensor {:?} uses driver mqtt, which needs an [mqtt] section",
                        sensor.name
                    ),
                );
            }
        }
        self.compute_cycles(&computes, node_name.as_ref().map(|(n, _)| n.as_str()));
        self.unmatched_local_patterns(&sensors, &executors, &rules, &computes);
        let _ = span;
        Some(Config {
            node: NodeSection {
                name: node_name.map(|(name, _)| name),
            },
            mesh: mesh?,
            api: ApiSection { listen, token_file },
            state: StateSection { dir },
            limits,
            sensors: sensors.into_iter().map(|(s, _)| s).collect(),
            actuators: actuators.into_iter().map(|(a, _)| a).collect(),
            executors: executors.into_iter().map(|(e, _, _)| e).collect(),
            rules: rules.into_iter().map(|(r, _, _)| r).collect(),
            computes: computes.into_iter().map(|(c, _)| c).collect(),
            mqtt: match mqtt {
                Some(section) => Some(section?),
                None => None,
            },
            exports,
            history,
            warnings: Vec::new(),
        })
    }

    /// Patterns on this node (`self/...`) that match none of its points:
    /// likely a typo. Only this node's points are known at check time.
    fn unmatched_local_patterns(
        &mut self,
        sensors: &[(SensorSection, Range<usize>)],
        executors: &[LocatedExecutor],
        rules: &[LocatedRule],
        computes: &[(ComputeSection, Range<usize>)],
    ) {
        const QUANTITY_NAMES: &[&str] = &[
            "temperature",
            "humidity",
            "pressure",
            "lux",
            "a0",
            "a1",
            "a2",
            "a3",
            "load1",
            "memory_used",
            "uptime",
            "disk_free",
            "level",
            "count",
            "value",
        ];
        let mut local: Vec<String> = QUANTITY_NAMES.iter().map(|q| (*q).to_owned()).collect();
        for (sensor, _) in sensors {
            local.push(sensor.name.clone());
            local.extend(sensor.json.iter().map(|(point, _)| point.clone()));
            local.extend(
                QUANTITY_NAMES
                    .iter()
                    .map(|q| format!("{}.{q}", sensor.name)),
            );
        }
        local.extend(computes.iter().map(|(c, _)| c.name.clone()));
        for (executor, _, _) in executors {
            if let Action::Publish { point, .. } = &executor.action {
                local.push(point.clone());
            }
        }
        let expressions = rules
            .iter()
            .flat_map(|(rule, span, _)| {
                [Some(&rule.when), rule.until.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(move |expr| (format!("rule {:?}", rule.name), expr, span.clone()))
            })
            .chain(
                computes
                    .iter()
                    .map(|(c, span)| (format!("compute {:?}", c.name), &c.expr, span.clone())),
            )
            .collect::<Vec<_>>();
        for (owner, expression, span) in expressions {
            for pattern in expression.parsed.patterns() {
                let matches = pattern.node != "self"
                    || local
                        .iter()
                        .any(|name| crate::expr::glob(pattern.name.as_bytes(), name.as_bytes()));
                if !matches {
                    let nearest = pattern.nearest(local.iter().map(|name| PointName {
                        node: "",
                        name,
                        own: true,
                    }));
                    let hint = nearest
                        .map(|p| format!(" (did you mean {p}?)"))
                        .unwrap_or_default();
                    self.warning(
                        span.clone(),
                        format!(
                            "{owner} reads {pattern}, which matches no point of this node{hint}"
                        ),
                    );
                }
            }
        }
    }

    /// A derived point that reads itself, directly or through others, can
    /// never settle: an error at the first compute of each cycle.
    fn compute_cycles(&mut self, computes: &[(ComputeSection, Range<usize>)], own: Option<&str>) {
        let reads: Vec<Vec<usize>> = computes
            .iter()
            .map(|(compute, _)| {
                let patterns = compute.expr.parsed.patterns();
                computes
                    .iter()
                    .enumerate()
                    .filter(|(_, (other, _))| {
                        patterns.iter().any(|p| {
                            let on_self = p.node == "self"
                                || p.node.contains(['*', '?'])
                                || own.is_some_and(|own| p.node == own);
                            on_self && crate::expr::glob(p.name.as_bytes(), other.name.as_bytes())
                        })
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let mut reported = BTreeSet::new();
        for start in 0..computes.len() {
            // Depth-first search for a path back to `start`.
            let mut stack = vec![(start, vec![start])];
            let mut seen = BTreeSet::new();
            while let Some((at, path)) = stack.pop() {
                for &next in &reads[at] {
                    if next == start {
                        if path.iter().all(|i| !reported.contains(i)) {
                            reported.extend(path.iter().copied());
                            let names: Vec<&str> = path
                                .iter()
                                .chain([&start])
                                .map(|&i| computes[i].0.name.as_str())
                                .collect();
                            self.problem(
                                computes[start].1.clone(),
                                format!(
                                    "compute {:?} depends on itself: {}",
                                    computes[start].0.name,
                                    names.join(" -> ")
                                ),
                            );
                        }
                    } else if seen.insert(next) {
                        let mut longer = path.clone();
                        longer.push(next);
                        stack.push((next, longer));
                    }
                }
            }
        }
    }

    fn mesh(&mut self, table: &DeTable<'_>) -> Option<MeshSection> {
        let p = "mesh.";
        self.known_keys(
            table,
            p,
            &[
                "port",
                "bind",
                "sync_port",
                "news_port",
                "broadcast",
                "peers",
                "beacon_interval",
                "suspect_after",
                "unreachable_after",
                "prune_after",
                "key_file",
                "open",
            ],
        );
        let port = self.port(table, p, "port").unwrap_or(d::MESH_PORT);
        let sync_port = self.port(table, p, "sync_port").unwrap_or(d::SYNC_PORT);
        if port == sync_port {
            if let Some(span) = self.span_of(table, "sync_port") {
                self.problem(
                    span,
                    format!("mesh.sync_port must differ from mesh.port ({port})"),
                );
            }
        }
        let news_port = match self.port(table, p, "news_port") {
            Some(news_port) => {
                if news_port == port || news_port == sync_port {
                    if let Some(span) = self.span_of(table, "news_port") {
                        self.problem(
                            span,
                            format!(
                                "mesh.news_port must differ from mesh.port ({port}) and \
                                 mesh.sync_port ({sync_port})"
                            ),
                        );
                    }
                }
                news_port
            }
            None => {
                let derived = port.checked_add(2).filter(|&n| n != sync_port);
                if derived.is_none() {
                    let span = self
                        .span_of(table, "port")
                        .or_else(|| self.span_of(table, "sync_port"));
                    if let Some(span) = span {
                        self.problem(
                            span,
                            format!(
                                "mesh.news_port is mesh.port + 2 unless set, and {} is not \
                                 free here: set mesh.news_port",
                                u32::from(port) + 2
                            ),
                        );
                    }
                }
                derived.unwrap_or(d::MESH_PORT + 2)
            }
        };
        let bind = self
            .parsed::<IpAddr>(table, p, "bind", "an IP address like 0.0.0.0")
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut broadcast = Vec::new();
        match self.strings(table, p, "broadcast") {
            None => broadcast.push(Broadcast::Auto),
            Some(items) => {
                for (item, span) in items {
                    if item == "auto" {
                        broadcast.push(Broadcast::Auto);
                    } else {
                        match item.parse::<Ipv4Addr>() {
                            Ok(address) => broadcast.push(Broadcast::Address(address)),
                            Err(_) => self.problem(
                                span,
                                format!("mesh.broadcast entry {item:?} must be \"auto\" or an IPv4 address"),
                            ),
                        }
                    }
                }
            }
        }
        let mut peers = Vec::new();
        for (peer, span) in self.strings(table, p, "peers").unwrap_or_default() {
            let valid = peer.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if valid {
                peers.push(peer);
            } else {
                self.problem(span, format!("mesh.peers entry {peer:?} must be host:port"));
            }
        }
        let beacon_interval = self
            .duration(table, p, "beacon_interval")
            .unwrap_or(d::BEACON_INTERVAL);
        let suspect_after = self
            .duration(table, p, "suspect_after")
            .unwrap_or(d::SUSPECT_AFTER);
        let unreachable_after = self
            .duration(table, p, "unreachable_after")
            .unwrap_or(d::UNREACHABLE_AFTER);
        if beacon_interval.is_zero() {
            let span = self.span_of(table, "beacon_interval").unwrap_or(0..0);
            self.problem(span, "mesh.beacon_interval must be above zero".to_owned());
        } else if suspect_after < beacon_interval * 2 {
            let span = self
                .span_of(table, "suspect_after")
                .or_else(|| self.span_of(table, "beacon_interval"))
                .unwrap_or(0..0);
            self.problem(
                span,
                format!(
                    "mesh.suspect_after ({}) must be at least twice mesh.beacon_interval ({}), or one lost beacon looks like a failure",
                    crate::format_duration(suspect_after),
                    crate::format_duration(beacon_interval)
                ),
            );
        }
        if unreachable_after <= suspect_after {
            let span = self
                .span_of(table, "unreachable_after")
                .or_else(|| self.span_of(table, "suspect_after"))
                .unwrap_or(0..0);
            self.problem(
                span,
                format!(
                    "mesh.unreachable_after ({}) must be later than mesh.suspect_after ({})",
                    crate::format_duration(unreachable_after),
                    crate::format_duration(suspect_after)
                ),
            );
        }
        let prune_after = self
            .duration(table, p, "prune_after")
            .unwrap_or(d::PRUNE_AFTER);
        if prune_after < unreachable_after {
            let span = self.span_of(table, "prune_after").unwrap_or(0..0);
            self.problem(
                span,
                format!(
                    "mesh.prune_after ({}) must be at least mesh.unreachable_after ({})",
                    crate::format_duration(prune_after),
                    crate::format_duration(unreachable_after)
                ),
            );
        }
        let key_file = self
            .string(table, p, "key_file")
            .map(|(s, _)| PathBuf::from(s));
        let open = self.boolean(table, p, "open").unwrap_or(false);
        if open && key_file.is_some() {
            let span = self.span_of(table, "open").unwrap_or(0..0);
            self.problem(
                span,
                "mesh.open = true runs without a key, but mesh.key_file names one: remove one of them"
                    .to_owned(),
            );
        }
        Some(MeshSection {
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
        })
    }

    fn limits(&mut self, table: &DeTable<'_>) -> LimitsSection {
        let p = "limits.";
        self.known_keys(
            table,
            p,
            &["max_nodes", "max_points_per_node", "history_per_point"],
        );
        let count = |walker: &mut Self, key: &str, default: usize, min: i64| {
            walker
                .integer(table, p, key)
                .and_then(|(value, span)| {
                    if (min..=1_000_000).contains(&value) {
                        Some(value as usize)
                    } else {
                        walker.problem(span, format!("{p}{key} must be between {min} and 1000000"));
                        None
                    }
                })
                .unwrap_or(default)
        };
        LimitsSection {
            max_nodes: count(self, "max_nodes", d::MAX_NODES, 1),
            max_points_per_node: count(self, "max_points_per_node", d::MAX_POINTS_PER_NODE, 1),
            history_per_point: count(self, "history_per_point", d::HISTORY_PER_POINT, 0),
        }
    }

    fn sensor(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<(SensorSection, Range<usize>)> {
        let p = "sensor.";
        let (name, driver, allowed) =
            self.device(table, span.clone(), "sensor", SENSOR_DRIVERS, SENSOR_COMMON);
        // Pushed messages: interval is the least time between readings.
        let pushed = driver
            .as_ref()
            .is_some_and(|(driver, _)| driver == "mqtt" || driver == "websocket");
        let interval = self.duration(table, p, "interval").unwrap_or(if pushed {
            d::MQTT_SENSOR_INTERVAL
        } else {
            d::SENSOR_INTERVAL
        });
        if interval.is_zero() {
            let span = self.span_of(table, "interval").unwrap_or(span.clone());
            self.problem(span, "sensor.interval must be above zero".to_owned());
        }
        let deadband = self.float(table, p, "deadband").unwrap_or(0.0);
        if deadband < 0.0 {
            let span = self.span_of(table, "deadband").unwrap_or(span.clone());
            self.problem(span, "sensor.deadband must not be negative".to_owned());
        }
        let messages = driver
            .as_ref()
            .is_some_and(|(driver, _)| MESSAGE_DRIVERS.contains(&driver.as_str()));
        let mut skipped = vec!["name", "driver", "interval", "deadband", "json"];
        if messages {
            skipped.extend(["unit", "headers", "command"]);
        }
        let settings = self.settings(table, p, &allowed, &skipped);
        let mut section = SensorSection {
            name: name.as_ref().map(|(n, _)| n.clone()).unwrap_or_default(),
            interval,
            deadband,
            ..SensorSection::default()
        };
        if let Some((driver, _)) = &driver {
            if driver == "sim" {
                self.check_sim(table, &settings, span.clone());
            }
            if messages {
                let keyed = self.json_fields(table, &section.name);
                let points: Vec<(String, String)> = if table.get("json").is_none() {
                    vec![(String::new(), section.name.clone())]
                } else {
                    keyed
                        .iter()
                        .map(|(f, p, _)| (f.clone(), p.clone()))
                        .collect()
                };
                section.units = self.units(table, &points);
                section.json = keyed.into_iter().map(|(_, p, j)| (p, j)).collect();
            }
            match driver.as_str() {
                "mqtt" => self.check_topic(table, &settings, span.clone()),
                "command" => section.argv = self.command_argv(table, span.clone()),
                "http" => section.headers = self.headers(table),
                _ => {}
            }
            self.check_source(table, driver, &settings, span.clone());
            self.check_hardware(table, driver, &settings, span.clone());
        }
        section.settings = settings;
        name?;
        section.driver = driver?.0;
        Some((section, span))
    }

    /// The part sensors and actuators share: a valid name, a known driver,
    /// and only the keys that driver (plus `common`) takes. Returns the name,
    /// the driver and the allowed keys.
    #[allow(clippy::type_complexity)]
    fn device(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        what: &str,
        drivers: &[(&str, &[&'static str])],
        common: &[&'static str],
    ) -> (
        Option<(String, Range<usize>)>,
        Option<(String, Range<usize>)>,
        Vec<&'static str>,
    ) {
        let prefix = format!("{what}.");
        let name = self.required_name(table, &prefix, span.clone());
        let driver = self.required_string(table, &prefix, "driver", span);
        let driver_keys = driver.as_ref().and_then(|(driver, driver_span)| {
            let keys = drivers
                .iter()
                .find(|(name, _)| name == driver)
                .map(|(_, keys)| *keys);
            if keys.is_none() {
                let known: Vec<&str> = drivers.iter().map(|(name, _)| *name).collect();
                self.problem(
                    driver_span.clone(),
                    format!(
                        "unknown {what} driver {driver:?}; known: {}",
                        known.join(", ")
                    ),
                );
            }
            keys
        });
        let allowed: Vec<&'static str> = common
            .iter()
            .chain(driver_keys.unwrap_or(&[]).iter())
            .copied()
            .collect();
        if driver_keys.is_some() {
            self.known_keys(table, &prefix, &allowed);
        }
        (name, driver, allowed)
    }

    /// Values a driver's datasheet or the Pi allow: I2C addresses and bus
    /// numbers, BCM pin numbers, ADC channels and gains, pulls, quantities.
    fn check_hardware(
        &mut self,
        table: &DeTable<'_>,
        driver: &str,
        settings: &BTreeMap<String, Setting>,
        span: Range<usize>,
    ) {
        let at = |walker: &Self, key: &str| walker.span_of(table, key).unwrap_or(span.clone());
        if let Some(&(_, addresses)) = I2C_ADDRESSES.iter().find(|(d, _)| *d == driver) {
            if let Some(Setting::Int(address)) = settings.get("address") {
                if !addresses.contains(address) {
                    let allowed: Vec<String> =
                        addresses.iter().map(|a| format!("{a:#04x}")).collect();
                    let message = format!(
                        "sensor.address {address:#04x} is not an address a {driver} can have ({})",
                        allowed.join(", ")
                    );
                    let span = at(self, "address");
                    self.problem(span, message);
                }
            }
            if let Some(Setting::Int(bus)) = settings.get("bus") {
                if !(0..=22).contains(bus) {
                    let span = at(self, "bus");
                    self.problem(
                        span,
                        format!("sensor.bus {bus} is not an I2C bus number (0 to 22; 1 on a Pi)"),
                    );
                }
            }
        }
        for key in ["pin"] {
            if let Some(Setting::Int(pin)) = settings.get(key) {
                if !(0..=27).contains(pin) {
                    let span = at(self, key);
                    self.problem(
                        span,
                        format!("sensor.pin {pin} is not a GPIO pin: BCM numbers 0 to 27"),
                    );
                }
            }
        }
        if driver == "gpio_in" && !settings.contains_key("pin") {
            self.problem(
                span.clone(),
                "a gpio_in sensor needs `pin` (BCM number)".to_owned(),
            );
        }
        if let Some(Setting::Text(pull)) = settings.get("pull") {
            if !["up", "down", "off"].contains(&pull.as_str()) {
                let span = at(self, "pull");
                self.problem(
                    span,
                    format!("sensor.pull {pull:?} must be up, down or off"),
                );
            }
        }
        if driver == "ads1115" {
            let channels = match settings.get("channels") {
                Some(Setting::Text(list)) => list.split(',').map(|c| c.trim().to_owned()).collect(),
                Some(Setting::Int(c)) => vec![c.to_string()],
                _ => Vec::new(),
            };
            if channels
                .iter()
                .any(|c| !matches!(c.as_str(), "0" | "1" | "2" | "3"))
            {
                let span = at(self, "channels");
                self.problem(
                    span,
                    format!("sensor.channels {channels:?} must be inputs 0 to 3"),
                );
            }
            let gain = match settings.get("gain") {
                Some(Setting::Float(g)) => Some(*g),
                Some(Setting::Int(g)) => Some(*g as f64),
                _ => None,
            };
            if let Some(gain) = gain {
                if !ADS1115_GAINS.iter().any(|g| (g - gain).abs() < 1e-9) {
                    let span = at(self, "gain");
                    self.problem(
                        span,
                        format!("sensor.gain {gain} must be a full-scale range in volts: 6.144, 4.096, 2.048, 1.024, 0.512 or 0.256"),
                    );
                }
            }
        }
        if driver == "ds18b20" {
            if let Some(Setting::Text(device)) = settings.get("device") {
                if device != "auto" && !device.starts_with("28-") {
                    let span = at(self, "device");
                    self.problem(span, format!("sensor.device {device:?} must be a 1-wire id like \"28-00000a1b2c3d\" or \"auto\""));
                }
            }
        }
        if let Some(Setting::Float(flaky)) = settings.get("flaky") {
            if !(0.0..=1.0).contains(flaky) {
                let span = at(self, "flaky");
                self.problem(
                    span,
                    format!("sensor.flaky {flaky} must be a probability, 0.0 to 1.0"),
                );
            }
        }
        if let Some(Setting::Text(list)) = settings.get("quantities") {
            let known = QUANTITIES
                .iter()
                .find(|(d, _)| *d == driver)
                .map(|(_, q)| *q);
            match known {
                None => {
                    let span = at(self, "quantities");
                    self.problem(
                        span,
                        format!("sensor.quantities: a {driver} gives one quantity only"),
                    );
                }
                Some(known) => {
                    for quantity in list.split(',').map(str::trim) {
                        if !known.contains(&quantity) {
                            let span = at(self, "quantities");
                            self.problem(
                                span,
                                format!("sensor.quantities: a {driver} gives no {quantity:?} (it gives {})", known.join(", ")),
                            );
                        }
                    }
                }
            }
        }
    }

    fn check_sim(
        &mut self,
        table: &DeTable<'_>,
        settings: &BTreeMap<String, Setting>,
        span: Range<usize>,
    ) {
        let waveform = match settings.get("waveform") {
            Some(Setting::Text(w)) => w.as_str(),
            _ => "sine",
        };
        if !["sine", "walk", "step", "constant"].contains(&waveform) {
            let span = self.span_of(table, "waveform").unwrap_or(span.clone());
            self.problem(
                span,
                format!("sensor.waveform {waveform:?} must be sine, walk, step or constant"),
            );
        }
        let number = |key: &str| match settings.get(key) {
            Some(Setting::Float(v)) => Some(*v),
            Some(Setting::Int(v)) => Some(*v as f64),
            _ => None,
        };
        if waveform == "constant" {
            if number("value").is_none() {
                self.problem(span, "a constant simulated sensor needs `value`".to_owned());
            }
        } else if let (Some(min), Some(max)) = (number("min"), number("max")) {
            if min >= max {
                let span = self.span_of(table, "max").unwrap_or(span);
                self.problem(
                    span,
                    format!("sensor.max ({max}) must be above sensor.min ({min})"),
                );
            }
        }
    }

    fn actuator(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<(ActuatorSection, Range<usize>)> {
        let p = "actuator.";
        let (name, driver, allowed) = self.device(
            table,
            span.clone(),
            "actuator",
            ACTUATOR_DRIVERS,
            &["name", "driver", "mqtt"],
        );
        let settings = self.settings(table, p, &allowed, &["name", "driver", "mqtt"]);
        let mqtt = self.boolean(table, p, "mqtt").unwrap_or(false);
        if let Some((name, name_span)) = name.as_ref().filter(|_| mqtt) {
            if name.len() > 25 {
                self.problem(
                    name_span.clone(),
                    format!("actuator {name:?} has mqtt = true: its name must be at most 25 bytes (its state is the point switch.NAME)"),
                );
            }
        }
        if let Some((driver, _)) = &driver {
            let at = |walker: &Self, key: &str| walker.span_of(table, key).unwrap_or(span.clone());
            match settings.get("pin") {
                Some(Setting::Int(pin)) if !(0..=27).contains(pin) => {
                    let span = at(self, "pin");
                    self.problem(
                        span,
                        format!("actuator.pin {pin} is not a GPIO pin: BCM numbers 0 to 27"),
                    );
                }
                None if driver == "gpio_out" => {
                    self.problem(
                        span.clone(),
                        "a gpio_out actuator needs `pin` (BCM number)".to_owned(),
                    );
                }
                _ => {}
            }
            if let Some(Setting::Int(channel)) = settings.get("channel") {
                if !(0..=1).contains(channel) {
                    let span = at(self, "channel");
                    self.problem(
                        span,
                        format!("actuator.channel {channel} is not a PWM channel (0 or 1)"),
                    );
                }
            }
        }
        Some((
            ActuatorSection {
                name: name?.0,
                driver: driver?.0,
                settings,
                mqtt,
            },
            span,
        ))
    }

    fn executor(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<LocatedExecutor> {
        let p = "executor.";
        self.known_keys(
            table,
            p,
            &["name", "action", "remote", "mqtt", "timeout", "policy"],
        );
        let name = self.required_name(table, p, span.clone());
        let remote = self.boolean(table, p, "remote").unwrap_or(false);
        let mqtt = self.boolean(table, p, "mqtt").unwrap_or(false);
        if let Some(name) = name.as_ref().filter(|(n, _)| mqtt && n.len() > 27) {
            self.problem(
                name.1.clone(),
                format!("executor {:?} has mqtt = true: its name must be at most 27 bytes (its last outcome is the point exec.NAME)", name.0),
            );
        }
        if mqtt && !remote {
            let span = self.span_of(table, "mqtt").unwrap_or(span.clone());
            self.problem(
                span,
                "executor.mqtt = true needs remote = true: the bridge that runs it may be \
                 another node"
                    .to_owned(),
            );
        }
        let timeout = self
            .duration(table, p, "timeout")
            .unwrap_or(d::EXECUTOR_TIMEOUT);
        let policy = match self.string(table, p, "policy") {
            None => Policy::Refuse,
            Some((text, _)) if text == "refuse" => Policy::Refuse,
            Some((text, _)) if text == "queue" => Policy::Queue,
            Some((text, span)) => {
                self.problem(
                    span,
                    format!("executor.policy {text:?} must be \"refuse\" or \"queue\""),
                );
                Policy::Refuse
            }
        };
        let mut actuator_span = None;
        let action = match table.get("action").map(|v| (v.get_ref(), v.span())) {
            None => {
                self.problem(span.clone(), "executor needs `action`".to_owned());
                None
            }
            Some((DeValue::Table(action), action_span)) => {
                let q = "executor.action.";
                self.known_keys(
                    action,
                    q,
                    &[
                        "actuator", "set", "toggle", "pulse", "duty", "command", "webhook",
                        "publish", "value",
                    ],
                );
                let actuator = self.string(action, q, "actuator");
                let command = self.strings(action, q, "command");
                let webhook = self.string(action, q, "webhook");
                let publish = self.string(action, q, "publish");
                let set = self.boolean(action, q, "set");
                let kinds = usize::from(actuator.is_some())
                    + usize::from(command.is_some())
                    + usize::from(webhook.is_some())
                    + usize::from(publish.is_some());
                if kinds != 1 {
                    self.problem(
                        action_span,
                        "executor.action needs exactly one of actuator, command, webhook or publish"
                            .to_owned(),
                    );
                    None
                } else if let Some((point, point_span)) = publish {
                    let value = self.float(action, q, "value");
                    if !is_valid_name(&point) {
                        self.problem(
                            point_span,
                            format!("executor.action.publish {point:?} is not a valid point name"),
                        );
                        None
                    } else if let Some(value) = value {
                        Some(Action::Publish { point, value })
                    } else {
                        self.problem(
                            action_span,
                            "executor.action with publish needs a number `value`".to_owned(),
                        );
                        None
                    }
                } else if let Some((actuator, a_span)) = actuator {
                    actuator_span = Some(a_span);
                    let toggle = self.boolean(action, q, "toggle").filter(|t| *t);
                    let pulse = self.duration(action, q, "pulse");
                    let duty = self.float(action, q, "duty");
                    let chosen = usize::from(set.is_some())
                        + usize::from(toggle.is_some())
                        + usize::from(pulse.is_some())
                        + usize::from(duty.is_some());
                    let command = match (set, toggle, pulse, duty) {
                        _ if chosen != 1 => None,
                        (Some(set), ..) => Some(ActuatorAction::Set(set)),
                        (_, Some(_), ..) => Some(ActuatorAction::Toggle),
                        (_, _, Some(pulse), _) => Some(ActuatorAction::Pulse(pulse)),
                        (.., Some(duty)) if (0.0..=1.0).contains(&duty) => {
                            Some(ActuatorAction::Duty(duty))
                        }
                        _ => {
                            self.problem(
                                action_span.clone(),
                                "executor.action.duty must be within 0.0 and 1.0".to_owned(),
                            );
                            return None;
                        }
                    };
                    match command {
                        Some(command) => Some(Action::Actuator { actuator, command }),
                        None => {
                            self.problem(
                                action_span,
                                "executor.action with actuator needs one of set, toggle, pulse or duty"
                                    .to_owned(),
                            );
                            None
                        }
                    }
                } else if let Some(argv) = command {
                    if argv.is_empty() {
                        self.problem(
                            action_span,
                            "executor.action.command must not be empty".to_owned(),
                        );
                        None
                    } else {
                        Some(Action::Command(argv.into_iter().map(|(s, _)| s).collect()))
                    }
                } else if let Some((url, url_span)) = webhook {
                    if url.starts_with("http://") || url.starts_with("https://") {
                        Some(Action::Webhook(url))
                    } else {
                        self.problem(url_span, format!("executor.action.webhook {url:?} must be an http:// or https:// URL"));
                        None
                    }
                } else {
                    None
                }
            }
            Some((other, action_span)) => {
                self.problem(
                    action_span,
                    format!("executor.action must be a table, not {}", kind(other)),
                );
                None
            }
        };
        Some((
            ExecutorSection {
                name: name?.0,
                action: action?,
                remote,
                mqtt,
                timeout,
                policy,
            },
            span,
            actuator_span,
        ))
    }

    fn rule(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Option<LocatedRule> {
        let p = "rule.";
        self.known_keys(
            table,
            p,
            &[
                "name",
                "when",
                "for",
                "do",
                "else",
                "stale_after",
                "on_unknown",
                "until",
            ],
        );
        let name = self.required_name(table, p, span.clone());
        let when = self.required_string(table, p, "when", span.clone());
        let run = self.required_string(table, p, "do", span.clone());
        let otherwise = self.string(table, p, "else");
        let on_unknown = self.string(table, p, "on_unknown");
        let hold_for = self.duration(table, p, "for").unwrap_or(Duration::ZERO);
        let stale_after = self.duration(table, p, "stale_after");
        let until = self.string(table, p, "until");
        let when = when.map(|(text, span)| self.expression("rule.when", text, span));
        let until = until.map(|(text, span)| self.expression("rule.until", text, span));
        let references: Vec<(String, Range<usize>)> = [&run, &otherwise, &on_unknown]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        Some((
            RuleSection {
                name: name?.0,
                when: when?,
                hold_for,
                run: run?.0,
                otherwise: otherwise.map(|(s, _)| s),
                stale_after,
                on_unknown: on_unknown.map(|(s, _)| s),
                until,
            },
            span,
            references,
        ))
    }

    /// Parses an expression, once; an error points at its character in the
    /// file (exact for strings without escapes). After an error the section
    /// keeps a stand-in (`false`) so its other keys are still checked; the
    /// problem recorded means no `Config` is returned, so the stand-in is
    /// never seen outside this module.
    fn expression(&mut self, key: &str, text: String, span: Range<usize>) -> Expression {
        match crate::expr::parse(&text) {
            Ok(parsed) => Expression { text, parsed },
            Err(error) => {
                let raw = self.text.get(span.clone()).unwrap_or("");
                let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
                    3
                } else {
                    1
                };
                let at =
                    (span.start + quote + error.at).min(span.end.saturating_sub(1).max(span.start));
                self.problem(at..at + 1, format!("{key}: {}", error.message));
                Expression {
                    text,
                    parsed: crate::expr::Expr::Bool(false),
                }
            }
        }
    }

    fn compute(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<(ComputeSection, Range<usize>)> {
        let p = "compute.";
        self.known_keys(table, p, &["name", "expr"]);
        let name = self.required_name(table, p, span.clone());
        let expr = self
            .required_string(table, p, "expr", span.clone())
            .map(|(text, span)| self.expression("compute.expr", text, span));
        Some((
            ComputeSection {
                name: name?.0,
                expr: expr?,
            },
            span,
        ))
    }

    // ----- building blocks -----

    fn unique<'a>(&mut self, what: &str, names: impl Iterator<Item = (&'a str, Range<usize>)>) {
        let mut seen = BTreeSet::new();
        for (name, span) in names {
            if !seen.insert(name) {
                self.problem(span, format!("duplicate {what} name {name:?}"));
            }
        }
    }

    fn known_keys(&mut self, table: &DeTable<'_>, prefix: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                let mut sorted = allowed.to_vec();
                crate::order::sort(&mut sorted);
                self.problem(
                    key.span(),
                    format!(
                        "unknown key `{prefix}{}`; expected one of: {}",
                        key.get_ref(),
                        sorted.join(", ")
                    ),
                );
            }
        }
    }

    fn span_of(&self, table: &DeTable<'_>, key: &str) -> Option<Range<usize>> {
        table.get(key).map(Spanned::span)
    }

    fn section<'a, 'i>(&mut self, root: &'a DeTable<'i>, key: &str) -> Option<&'a DeTable<'i>> {
        match root.get(key).map(|v| (v.get_ref(), v.span())) {
            None => None,
            Some((DeValue::Table(table), _)) => Some(table),
            Some((other, span)) => {
                self.problem(
                    span,
                    format!("[{key}] must be a table, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn array_of_tables<'a, 'i>(
        &mut self,
        root: &'a DeTable<'i>,
        key: &str,
    ) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
        match root.get(key).map(|v| (v.get_ref(), v.span())) {
            None => Vec::new(),
            Some((DeValue::Array(items), _)) => items
                .iter()
                .filter_map(|item| match item.get_ref() {
                    DeValue::Table(table) => Some((table, item.span())),
                    other => {
                        self.problem(
                            item.span(),
                            format!("[[{key}]] entries must be tables, not {}", kind(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some((other, span)) => {
                self.problem(
                    span,
                    format!("`{key}` must be written [[{key}]], not {}", kind(other)),
                );
                Vec::new()
            }
        }
    }

    fn get<'a, 'i>(&self, table: &'a DeTable<'i>, key: &str) -> Option<&'a Value<'i>> {
        table.get(key)
    }

    fn wrong_type(&mut self, value: &Value<'_>, prefix: &str, key: &str, expected: &str) {
        self.problem(
            value.span(),
            format!(
                "{prefix}{key} must be {expected}, not {}",
                kind(value.get_ref())
            ),
        );
    }

    fn string(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &str,
    ) -> Option<(String, Range<usize>)> {
        let value = self.get(table, key)?;
        match value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), value.span())),
            _ => {
                self.wrong_type(value, prefix, key, "a string");
                None
            }
        }
    }

    fn required_string(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &str,
        table_span: Range<usize>,
    ) -> Option<(String, Range<usize>)> {
        if table.get(key).is_none() {
            let what = prefix.trim_end_matches('.');
            self.problem(table_span, format!("{what} needs `{key}`"));
            return None;
        }
        self.string(table, prefix, key)
    }

    fn required_name(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        table_span: Range<usize>,
    ) -> Option<(String, Range<usize>)> {
        let (name, span) = self.required_string(table, prefix, "name", table_span)?;
        if is_valid_name(&name) {
            Some((name, span))
        } else {
            self.problem(
                span,
                format!("{prefix}name {name:?} must be 1 to 32 of A-Z a-z 0-9 _ - ."),
            );
            None
        }
    }

    fn strings(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let value = self.get(table, key)?;
        match value.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(s) => out.push((s.to_string(), item.span())),
                        other => self.problem(
                            item.span(),
                            format!("{prefix}{key} entries must be strings, not {}", kind(other)),
                        ),
                    }
                }
                Some(out)
            }
            _ => {
                self.wrong_type(value, prefix, key, "an array of strings");
                None
            }
        }
    }

    fn integer(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &str,
    ) -> Option<(i64, Range<usize>)> {
        let value = self.get(table, key)?;
        match value.get_ref() {
            DeValue::Integer(integer) => {
                let digits = integer.as_str().replace('_', "");
                let parsed = match integer.radix() {
                    10 => digits.parse::<i64>().ok(),
                    radix => {
                        let unprefixed = ["0x", "0o", "0b"]
                            .iter()
                            .find_map(|prefix| digits.strip_prefix(prefix))
                            .unwrap_or(&digits);
                        i64::from_str_radix(unprefixed, radix).ok()
                    }
                };
                match parsed {
                    Some(v) => Some((v, value.span())),
                    None => {
                        self.problem(value.span(), format!("{prefix}{key} is out of range"));
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(value, prefix, key, "an integer");
                None
            }
        }
    }

    fn float(&mut self, table: &DeTable<'_>, prefix: &str, key: &str) -> Option<f64> {
        let value = self.get(table, key)?;
        match value.get_ref() {
            DeValue::Float(float) => match float.as_str().replace('_', "").parse::<f64>() {
                Ok(v) if v.is_finite() => Some(v),
                _ => {
                    self.problem(
                        value.span(),
                        format!("{prefix}{key} must be a finite number"),
                    );
                    None
                }
            },
            DeValue::Integer(_) => self.integer(table, prefix, key).map(|(v, _)| v as f64),
            _ => {
                self.wrong_type(value, prefix, key, "a number");
                None
            }
        }
    }

    fn boolean(&mut self, table: &DeTable<'_>, prefix: &str, key: &str) -> Option<bool> {
        let value = self.get(table, key)?;
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(value, prefix, key, "true or false");
                None
            }
        }
    }

    fn duration(&mut self, table: &DeTable<'_>, prefix: &str, key: &str) -> Option<Duration> {
        let (text, span) = match self.get(table, key)?.get_ref() {
            DeValue::String(_) => self.string(table, prefix, key)?,
            _ => {
                let value = self.get(table, key)?;
                self.wrong_type(value, prefix, key, "a duration string like \"5s\"");
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(duration) => Some(duration),
            Err(error) => {
                self.problem(span, format!("{prefix}{key}: {error}"));
                None
            }
        }
    }

    fn port(&mut self, table: &DeTable<'_>, prefix: &str, key: &str) -> Option<u16> {
        let (value, span) = self.integer(table, prefix, key)?;
        match u16::try_from(value) {
            Ok(port) if port > 0 => Some(port),
            _ => {
                self.problem(
                    span,
                    format!("{prefix}{key} must be a port between 1 and 65535, not {value}"),
                );
                None
            }
        }
    }

    fn parsed<T: std::str::FromStr>(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        key: &str,
        expected: &str,
    ) -> Option<T> {
        let (text, span) = self.string(table, prefix, key)?;
        match text.parse::<T>() {
            Ok(value) => Some(value),
            Err(_) => {
                self.problem(span, format!("{prefix}{key} {text:?} must be {expected}"));
                None
            }
        }
    }

    /// Driver settings: every allowed key but the common ones, as scalars.
    fn settings(
        &mut self,
        table: &DeTable<'_>,
        prefix: &str,
        allowed: &[&str],
        common: &[&str],
    ) -> BTreeMap<String, Setting> {
        let mut settings = BTreeMap::new();
        for (key, value) in table.iter() {
            let key = key.get_ref().as_ref();
            if common.contains(&key) || !allowed.contains(&key) {
                continue;
            }
            let setting = match value.get_ref() {
                DeValue::String(s) => match parse_duration(s) {
                    Ok(duration)
                        if ["period", "max_interval", "timeout", "debounce", "pulse"]
                            .contains(&key) =>
                    {
                        Some(Setting::Duration(duration))
                    }
                    Err(error)
                        if ["period", "max_interval", "timeout", "debounce", "pulse"]
                            .contains(&key) =>
                    {
                        self.problem(value.span(), format!("{prefix}{key}: {error}"));
                        None
                    }
                    _ => Some(Setting::Text(s.to_string())),
                },
                DeValue::Integer(_) => self
                    .integer(table, prefix, key)
                    .map(|(v, _)| Setting::Int(v)),
                DeValue::Float(_) => self.float(table, prefix, key).map(Setting::Float),
                DeValue::Boolean(b) => Some(Setting::Bool(*b)),
                DeValue::Array(items) => {
                    // Lists (e.g. ads1115 channels) are kept as comma-joined text.
                    let mut parts = Vec::new();
                    for item in items.iter() {
                        match item.get_ref() {
                            DeValue::String(s) => parts.push(s.to_string()),
                            DeValue::Integer(i) => parts.push(i.as_str().replace('_', "")),
                            DeValue::Float(f) => parts.push(f.as_str().replace('_', "")),
                            other => self.problem(
                                item.span(),
                                format!(
                                    "{prefix}{key} entries must be scalars, not {}",
                                    kind(other)
                                ),
                            ),
                        }
                    }
                    Some(Setting::Text(parts.join(",")))
                }
                other => {
                    self.problem(
                        value.span(),
                        format!("{prefix}{key} must be a scalar, not {}", kind(other)),
                    );
                    None
                }
            };
            if let Some(setting) = setting {
                settings.insert(key.to_owned(), setting);
            }
        }
        settings
    }
}

/// Node, point, sensor, executor and rule names: 1 to 32 of `A-Z a-z 0-9 _ - .`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests;
