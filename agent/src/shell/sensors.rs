//! The sampling loop's bookkeeping: from `[[sensor]]` sections to hal
//! devices, and from their samples to mesh readings.
//!
//! Each sensor has its own interval. A reading enters the store when it
//! moved more than `deadband` since the last one published, or when
//! `max_interval` passed (so a stable room sends next to nothing). A read
//! runs on a blocking thread (`smol::unblock`) so a slow bus never stalls the
//! agent; one that outlives `timeout` marks the sensor in error and the
//! sensor is not read again until that read returns. A failing sensor
//! publishes `Value::Error` on its points once (visible everywhere, not a
//! silent gap), is retried with backoff (interval × 2, 4, 8... up to a
//! minute), and publishes fresh values as soon as it reads again.
//!
//! Sensors whose values come as messages read differently and behave the
//! same: an `http` sensor's GET and a `command` sensor's run are async
//! tasks on the agent's executor (no thread each), bounded by `timeout`,
//! and their message becomes values through `messages.rs`. A message that
//! cannot be read is a failed read (error, backoff); a JSON pointer that
//! finds nothing is an error on its point only.
//!
//! [`Sensors`] is the agent loop's owner of all of it: it starts due reads,
//! and turns finished ones into the core's readings. A configuration reload
//! ([`Sensors::reload`]) keeps each sensor whose section is unchanged as it
//! is (schedule, deadband memory, error state, a read under way); a new or
//! changed one starts afresh, and a read under way of a removed one is
//! dropped when it returns.

use super::fetch;
use super::messages::{within_deadband, Mapping};
use shoal_config::{SensorSection, Setting};
use shoal_core::time::Instant;
use shoal_core::wire::{self, Name, Unit, Value};
use shoal_core::{Node, Reading};
use shoal_hal::bus::RootFs;
use shoal_hal::drivers::{self, ads1115, bh1750, bme280, ds18b20, gpio, sht3x, system};
use shoal_hal::sim::{SimDevice, SimSensor, Waveform};
use shoal_hal::{HalError, Sample, Sensor, UnitLabel};
use smol::channel::{Receiver, Sender};
use smol::LocalExecutor;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Drivers whose messages come when their publisher sends them, not when
/// a sampler asks.
pub const PUSHED: &[&str] = &["mqtt", "websocket"];

/// Longest wait between retries of a failing sensor (unless its interval
/// is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Default time a read may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a sampler reads.
pub enum Device {
    /// A hal device: a blocking read on a thread.
    Hal(Box<dyn Sensor>),
    /// A message source read by an async task.
    Fetch(Fetch),
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Hal(_) => f.write_str("Hal"),
            Device::Fetch(fetch) => f.debug_tuple("Fetch").field(fetch).finish(),
        }
    }
}

/// A source of messages read on an interval.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetch {
    /// `http`: GET the URL with these request headers.
    Http {
        /// Where.
        url: shoal_config::Url,
        /// Header lines (each ending in CRLF), basic auth included.
        headers: String,
    },
    /// `command`: run the argv; its stdout is the message.
    Command(Vec<String>),
}

/// What a read returned.
#[derive(Debug)]
pub enum ReadResult {
    /// A hal device's samples.
    Samples(Result<Vec<Sample>, HalError>),
    /// A message, or why there is none.
    Message(Result<Vec<u8>, String>),
}

/// One configured sensor and its schedule.
pub struct Sampler {
    /// The sensor's name.
    pub name: String,
    /// Its section, to tell an unchanged sensor at a reload.
    section: SensorSection,
    /// Which sampler a read under way belongs to (set by [`Sensors`]).
    id: u64,
    device: Option<Device>,
    /// Points by quantity (a hal quantity, or a message sensor's point
    /// name) and point name.
    points: Vec<(String, Name)>,
    /// A `sim` sensor's unit override.
    unit: Option<Unit>,
    /// How a message sensor's message becomes values.
    mapping: Option<Mapping>,
    interval: Duration,
    deadband: f64,
    max_interval: Duration,
    timeout: Duration,
    /// When the next read is due.
    pub next: Instant,
    last: BTreeMap<String, (Value, Instant)>,
    failures: u32,
    /// Failed reads and error values read (the sensor errors counter).
    pub errors: u64,
    /// The error published, while in error.
    error: Option<String>,
    /// A read in flight since then.
    reading_since: Option<Instant>,
    /// The read in flight is a message source's: its task ends itself at
    /// `timeout` with that error, so the sampler does not time it out too.
    self_timed: bool,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("name", &self.name)
            .field("next", &self.next)
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

fn number(sensor: &SensorSection, key: &str) -> Option<f64> {
    match sensor.settings.get(key) {
        Some(Setting::Float(v)) => Some(*v),
        Some(Setting::Int(v)) => Some(*v as f64),
        _ => None,
    }
}

fn int(sensor: &SensorSection, key: &str) -> Option<i64> {
    match sensor.settings.get(key) {
        Some(Setting::Int(v)) => Some(*v),
        _ => None,
    }
}

fn text<'s>(sensor: &'s SensorSection, key: &str) -> Option<&'s str> {
    match sensor.settings.get(key) {
        Some(Setting::Text(v)) => Some(v),
        _ => None,
    }
}

fn duration(sensor: &SensorSection, key: &str) -> Option<Duration> {
    match sensor.settings.get(key) {
        Some(Setting::Duration(v)) => Some(*v),
        _ => None,
    }
}

/// A comma-separated list setting (arrays are kept as comma-joined text).
fn list(sensor: &SensorSection, key: &str) -> Option<Vec<String>> {
    match sensor.settings.get(key) {
        Some(Setting::Text(v)) => Some(v.split(',').map(|s| s.trim().to_owned()).collect()),
        Some(Setting::Int(v)) => Some(vec![v.to_string()]),
        _ => None,
    }
}

/// The I2C address, or the driver's first one.
fn address(sensor: &SensorSection) -> u8 {
    let default = drivers::I2C_ADDRESSES
        .iter()
        .find(|(driver, _)| *driver == sensor.driver)
        .map_or(0, |(_, addresses)| addresses[0]);
    int(sensor, "address")
        .and_then(|a| u8::try_from(a).ok())
        .unwrap_or(default)
}

/// An I2C bus opened at first use, and again after a failure: a bus that
/// is missing at start (I2C not enabled yet, an adapter unplugged) is a
/// sensor error that heals, not a sensor left out.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct LazyI2c {
    bus: u8,
    open: Option<shoal_hal::rpi::RpiI2c>,
}

#[cfg(target_os = "linux")]
impl LazyI2c {
    fn get(&mut self) -> Result<&mut shoal_hal::rpi::RpiI2c, shoal_hal::bus::BusError> {
        if self.open.is_none() {
            self.open = Some(shoal_hal::rpi::RpiI2c::open(self.bus)?);
        }
        self.open
            .as_mut()
            .ok_or_else(|| shoal_hal::bus::BusError::Io("bus not open".to_owned()))
    }

    fn after<T>(
        &mut self,
        result: Result<T, shoal_hal::bus::BusError>,
    ) -> Result<T, shoal_hal::bus::BusError> {
        if matches!(result, Err(shoal_hal::bus::BusError::Io(_))) {
            self.open = None;
        }
        result
    }
}

#[cfg(target_os = "linux")]
impl shoal_hal::bus::I2c for LazyI2c {
    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), shoal_hal::bus::BusError> {
        let result = self.get().and_then(|bus| bus.write(address, bytes));
        self.after(result)
    }

    fn write_read(
        &mut self,
        address: u8,
        bytes: &[u8],
        buf: &mut [u8],
    ) -> Result<(), shoal_hal::bus::BusError> {
        let result = self
            .get()
            .and_then(|bus| bus.write_read(address, bytes, buf));
        self.after(result)
    }

    fn read(&mut self, address: u8, buf: &mut [u8]) -> Result<(), shoal_hal::bus::BusError> {
        let result = self.get().and_then(|bus| bus.read(address, buf));
        self.after(result)
    }
}

#[cfg(target_os = "linux")]
fn i2c_bus(sensor: &SensorSection) -> Result<LazyI2c, String> {
    let bus = int(sensor, "bus")
        .and_then(|b| u8::try_from(b).ok())
        .unwrap_or(1);
    Ok(LazyI2c { bus, open: None })
}

/// What reads a `[[sensor]]` section of node `node_name`.
pub fn device(sensor: &SensorSection, node_name: &str) -> Result<Device, String> {
    match sensor.driver.as_str() {
        "http" => {
            let Some(Setting::Text(url)) = sensor.settings.get("url") else {
                return Err("an http sensor needs `url`".to_owned());
            };
            let url = shoal_config::parse_url(url, "http", "https")?;
            let password = match text(sensor, "password_file") {
                Some(path) => Some(super::files::read_first_line(
                    std::path::Path::new(path),
                    "password_file",
                )?),
                None => None,
            };
            let headers = fetch::request_headers(
                &sensor.headers,
                text(sensor, "username"),
                password.as_deref(),
            );
            Ok(Device::Fetch(Fetch::Http { url, headers }))
        }
        "command" => Ok(Device::Fetch(Fetch::Command(sensor.argv.clone()))),
        _ => hal_device(sensor, node_name).map(Device::Hal),
    }
}

/// Builds the hal device of a `[[sensor]]` section of node `node_name`.
pub fn hal_device(sensor: &SensorSection, node_name: &str) -> Result<Box<dyn Sensor>, String> {
    let fs = || RootFs::new("/");
    Ok(match sensor.driver.as_str() {
        "sim" => sim_device(sensor, node_name)?,
        "soc_temp" => Box::new(system::SocTemp::new(
            fs(),
            int(sensor, "zone")
                .and_then(|z| u32::try_from(z).ok())
                .unwrap_or(0),
        )),
        "system" => Box::new(system::System::new(fs(), "/")),
        "ds18b20" => Box::new(ds18b20::Ds18b20::new(
            fs(),
            text(sensor, "device")
                .filter(|d| *d != "auto")
                .map(str::to_owned),
        )),
        #[cfg(target_os = "linux")]
        "bme280" => Box::new(bme280::Bme280::new(
            i2c_bus(sensor)?,
            address(sensor),
            bme280::Chip::Bme280,
        )),
        #[cfg(target_os = "linux")]
        "bmp280" => Box::new(bme280::Bme280::new(
            i2c_bus(sensor)?,
            address(sensor),
            bme280::Chip::Bmp280,
        )),
        #[cfg(target_os = "linux")]
        "sht3x" => Box::new(sht3x::Sht3x::new(i2c_bus(sensor)?, address(sensor))),
        #[cfg(target_os = "linux")]
        "bh1750" => Box::new(bh1750::Bh1750::new(i2c_bus(sensor)?, address(sensor))),
        #[cfg(target_os = "linux")]
        "ads1115" => ads1115_device(sensor)?,
        #[cfg(target_os = "linux")]
        "gpio_in" => gpio_in_device(sensor)?,
        other => return Err(format!("driver {other:?} is not available on this system")),
    })
}

/// The seed of a `sim` sensor: its `seed`, else one derived from the node's
/// and the sensor's names, so that nodes sharing a configuration read
/// different values (and each node the same ones at every start).
pub fn sim_seed(sensor: &SensorSection, node_name: &str) -> u64 {
    if let Some(seed) = int(sensor, "seed") {
        return seed as u64;
    }
    // FNV-1a over "NODE\0SENSOR".
    let bytes = node_name.bytes().chain([0]).chain(sensor.name.bytes());
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash: u64, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A `sim` sensor: a seeded waveform, optionally flaky.
fn sim_device(sensor: &SensorSection, node_name: &str) -> Result<Box<dyn Sensor>, String> {
    let waveform = match text(sensor, "waveform") {
        Some("walk") => Waveform::Walk,
        Some("step") => Waveform::Step,
        Some("constant") => Waveform::Constant(number(sensor, "value").unwrap_or(0.0)),
        _ => Waveform::Sine,
    };
    let (min, max) = match waveform {
        Waveform::Constant(v) => (v - 1.0, v + 1.0),
        _ => (
            number(sensor, "min").unwrap_or(0.0),
            number(sensor, "max").unwrap_or(100.0),
        ),
    };
    let period = duration(sensor, "period").unwrap_or(Duration::from_secs(600));
    let seed = sim_seed(sensor, node_name);
    let sim = SimSensor::new(waveform, min, max, period, seed).map_err(|e| e.to_string())?;
    Ok(Box::new(SimDevice::new(
        sim,
        number(sensor, "flaky").unwrap_or(0.0),
    )))
}

/// An ADS1115 on I2C: its channels, gain and scaling.
#[cfg(target_os = "linux")]
fn ads1115_device(sensor: &SensorSection) -> Result<Box<dyn Sensor>, String> {
    let channels: Vec<u8> = list(sensor, "channels")
        .unwrap_or_else(|| vec!["0".to_owned()])
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect();
    let unit = text(sensor, "unit").map_or(UnitLabel::Typed(shoal_hal::Unit::Volt), |u| {
        UnitLabel::Custom(u.to_owned())
    });
    Ok(Box::new(
        ads1115::Ads1115::new(
            i2c_bus(sensor)?,
            address(sensor),
            &channels,
            number(sensor, "gain").unwrap_or(4.096),
            number(sensor, "scale").unwrap_or(1.0),
            number(sensor, "offset").unwrap_or(0.0),
            unit,
        )
        .map_err(|e| e.to_string())?,
    ))
}

/// A GPIO input with debounce.
#[cfg(target_os = "linux")]
fn gpio_in_device(sensor: &SensorSection) -> Result<Box<dyn Sensor>, String> {
    let pin = int(sensor, "pin")
        .and_then(|p| u8::try_from(p).ok())
        .ok_or("gpio_in needs `pin`")?;
    let pull = match text(sensor, "pull") {
        Some("down") => shoal_hal::rpi::Pull::Down,
        Some("off") => shoal_hal::rpi::Pull::Off,
        _ => shoal_hal::rpi::Pull::Up,
    };
    let input = shoal_hal::rpi::RpiInput::open(pin, pull).map_err(|e| e.to_string())?;
    Ok(Box::new(gpio::GpioIn::new(
        input,
        duration(sensor, "debounce").unwrap_or(Duration::from_millis(50)),
    )))
}

/// Builds the hal device of an `[[actuator]]` section.
pub fn actuator(
    section: &shoal_config::ActuatorSection,
) -> Result<Box<dyn shoal_hal::Actuator>, String> {
    let int = |key: &str| match section.settings.get(key) {
        Some(Setting::Int(v)) => Some(*v),
        _ => None,
    };
    Ok(match section.driver.as_str() {
        "sim" => Box::new(shoal_hal::sim::SimActuator::default()),
        #[cfg(target_os = "linux")]
        "gpio_out" => {
            let pin = int("pin")
                .and_then(|p| u8::try_from(p).ok())
                .ok_or("gpio_out needs `pin`")?;
            let active_low = matches!(
                section.settings.get("active_low"),
                Some(Setting::Bool(true))
            );
            let output = shoal_hal::rpi::RpiOutput::open(pin).map_err(|e| e.to_string())?;
            Box::new(gpio::GpioOut::new(output, active_low).map_err(|e| e.to_string())?)
        }
        #[cfg(target_os = "linux")]
        "pwm" => {
            let channel = int("channel")
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(0);
            let frequency = match section.settings.get("frequency") {
                Some(Setting::Float(f)) => *f,
                Some(Setting::Int(f)) => *f as f64,
                _ => 1000.0,
            };
            let pwm =
                shoal_hal::rpi::RpiPwm::open(channel, frequency).map_err(|e| e.to_string())?;
            Box::new(gpio::PwmOut::new(pwm).map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "actuator driver {other:?} is not available on this system"
            ))
        }
    })
}

/// The point names of a sensor: one quantity is published under the
/// sensor's name; several as `NAME.QUANTITY`, or as plain `QUANTITY` when
/// the sensor is named after one of them (a `bme280` named `temperature`
/// publishes `temperature`, `humidity` and `pressure`).
pub fn point_names(sensor: &str, quantities: &[&'static str]) -> Vec<(&'static str, String)> {
    if quantities.len() == 1 {
        return vec![(quantities[0], sensor.to_owned())];
    }
    let plain = quantities.contains(&sensor);
    quantities
        .iter()
        .map(|&q| {
            (
                q,
                if plain {
                    q.to_owned()
                } else {
                    format!("{sensor}.{q}")
                },
            )
        })
        .collect()
}

/// The quantities a section publishes: the driver's, narrowed by
/// `quantities` (and by `channels` for the ads1115).
fn quantities(sensor: &SensorSection, device: &dyn Sensor) -> Vec<&'static str> {
    let all = device.quantities();
    let wanted: Option<Vec<String>> = if sensor.driver == "ads1115" {
        list(sensor, "channels")
            .map(|channels| channels.iter().map(|c| format!("a{c}")).collect())
            .or_else(|| Some(vec!["a0".to_owned()]))
    } else {
        list(sensor, "quantities")
    };
    match wanted {
        Some(wanted) => all
            .iter()
            .copied()
            .filter(|q| wanted.iter().any(|w| w == q))
            .collect(),
        None => all.to_vec(),
    }
}

impl Sampler {
    /// A sampler for `sensor` around `device`, first read at `now`.
    pub fn new(sensor: &SensorSection, device: Device, now: Instant) -> Result<Sampler, String> {
        let mapping = matches!(device, Device::Fetch(_)).then(|| Mapping::new(sensor));
        let names: Vec<(String, String)> = match (&device, &mapping) {
            (Device::Hal(device), _) => {
                point_names(&sensor.name, &quantities(sensor, device.as_ref()))
                    .into_iter()
                    .map(|(q, name)| (q.to_owned(), name))
                    .collect()
            }
            (Device::Fetch(_), Some(mapping)) => mapping
                .points()
                .map(|point| (point.to_owned(), point.to_owned()))
                .collect(),
            (Device::Fetch(_), None) => Vec::new(),
        };
        let points = names
            .into_iter()
            .map(|(q, name)| {
                wire::name(&name).map(|n| (q, n)).ok_or_else(|| {
                    format!("point name {name:?} is not valid (at most 32 of A-Z a-z 0-9 _ - .)")
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let unit = match (sensor.driver.as_str(), text(sensor, "unit")) {
            ("sim", Some(unit)) => Some(wire::unit(unit).ok_or("unit longer than 8 bytes")?),
            _ => None,
        };
        Ok(Sampler {
            name: sensor.name.clone(),
            section: sensor.clone(),
            id: 0,
            device: Some(device),
            points,
            unit,
            mapping,
            interval: sensor.interval,
            deadband: sensor.deadband,
            max_interval: duration(sensor, "max_interval")
                .unwrap_or(Duration::from_secs(60).max(sensor.interval)),
            timeout: duration(sensor, "timeout").unwrap_or(DEFAULT_TIMEOUT),
            next: now,
            last: BTreeMap::new(),
            failures: 0,
            errors: 0,
            error: None,
            reading_since: None,
            self_timed: false,
        })
    }

    /// Whether a read should start now.
    pub fn is_due(&self, now: Instant) -> bool {
        self.device.is_some() && now >= self.next
    }

    /// When this sampler needs attention next: its next read, or the
    /// timeout of the read in flight.
    pub fn deadline(&self) -> Option<Instant> {
        match (&self.device, self.reading_since) {
            (Some(_), _) => Some(self.next),
            (None, Some(since)) if self.error.is_none() && !self.self_timed => {
                Some(since + self.timeout)
            }
            _ => None,
        }
    }

    /// Hands the device out for a read at `now`.
    pub fn start(&mut self, now: Instant) -> Option<Device> {
        let device = self.device.take()?;
        self.reading_since = Some(now);
        self.self_timed = matches!(device, Device::Fetch(_));
        Some(device)
    }

    /// A read in flight for longer than `timeout`: the sensor is in error
    /// until it returns. Returns the error readings to publish.
    pub fn check_timeout(&mut self, now: Instant) -> Vec<Reading> {
        match self.reading_since {
            Some(since)
                if self.device.is_none()
                    && !self.self_timed
                    && now >= since + self.timeout
                    && self.error.is_none() =>
            {
                let message = format!(
                    "read timed out after {}",
                    shoal_config::format_duration(self.timeout)
                );
                self.fail(now, message)
            }
            _ => Vec::new(),
        }
    }

    /// The read started by [`Sampler::start`] returned: the device comes
    /// back, and the readings to publish go out.
    pub fn finish(&mut self, now: Instant, device: Device, result: ReadResult) -> Vec<Reading> {
        self.device = Some(device);
        self.reading_since = None;
        match self.values(result) {
            Ok(values) => self.succeed(now, values),
            Err(error) => self.fail(now, error),
        }
    }

    /// A read's values as (quantity, value, unit), or why there are none.
    fn values(&self, result: ReadResult) -> Result<Vec<(String, Value, Unit)>, String> {
        match result {
            ReadResult::Samples(samples) => Ok(samples
                .map_err(|error| error.to_string())?
                .into_iter()
                .filter(|sample| sample.value.is_finite())
                .map(|sample| {
                    let unit = self
                        .unit
                        .clone()
                        .or_else(|| wire::unit(sample.unit.symbol()))
                        .unwrap_or_default();
                    (sample.quantity.to_owned(), Value::Float(sample.value), unit)
                })
                .collect()),
            ReadResult::Message(message) => {
                let mapping = self.mapping.as_ref().ok_or("no mapping")?;
                Ok(mapping
                    .values(&message?)?
                    .into_iter()
                    .map(|(point, value)| {
                        let unit = mapping.unit(&point);
                        (point, value, unit)
                    })
                    .collect())
            }
        }
    }

    fn succeed(&mut self, now: Instant, values: Vec<(String, Value, Unit)>) -> Vec<Reading> {
        let recovered = self.error.take();
        if let Some(error) = &recovered {
            log::info!("sensor {}: reads again (was: {error})", self.name);
        }
        self.failures = 0;
        self.next = now + self.interval;
        let mut readings = Vec::new();
        for (quantity, value, unit) in values {
            let Some((_, point)) = self.points.iter().find(|(q, _)| *q == quantity) else {
                continue;
            };
            if let Value::Error(why) = &value {
                self.errors += 1;
                let said = self
                    .last
                    .get(&quantity)
                    .is_some_and(|(last, _)| *last == value);
                if !said {
                    log::warn!("sensor {}: point {point}: {why}", self.name);
                }
            }
            let publish = recovered.is_some()
                || match self.last.get(&quantity) {
                    None => true,
                    Some((last, at)) => {
                        !within_deadband(Some(last), &value, self.deadband)
                            || now.saturating_since(*at) >= self.max_interval
                    }
                };
            if !publish {
                continue;
            }
            self.last.insert(quantity, (value.clone(), now));
            readings.push(reading(point.clone(), value, unit));
        }
        readings
    }

    fn fail(&mut self, now: Instant, message: String) -> Vec<Reading> {
        self.failures = self.failures.saturating_add(1);
        self.errors += 1;
        let factor = 1u32 << (self.failures - 1).min(10);
        let backoff = (self.interval * factor).min(MAX_BACKOFF.max(self.interval));
        self.next = now + backoff;
        if self.error.as_deref() == Some(message.as_str()) {
            log::debug!("sensor {}: still failing: {message}", self.name);
            return Vec::new();
        }
        log::warn!(
            "sensor {}: {message}; retrying in {}",
            self.name,
            shoal_config::format_duration(backoff)
        );
        self.error = Some(message.clone());
        self.last.clear();
        let short = short_error(&message);
        self.points
            .iter()
            .map(|(_, point)| reading(point.clone(), Value::Error(short.clone()), Unit::new()))
            .collect()
    }

    /// Whether the sensor is in error now.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }
}

/// The first 32 bytes of an error, for the point value (the log has it all).
fn short_error(message: &str) -> heapless::String<{ wire::MAX_TEXT }> {
    let cleaned: String = shoal_core::command::cut(message, wire::MAX_TEXT)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    heapless::String::try_from(cleaned.as_str()).unwrap_or_default()
}

fn reading(name: Name, value: Value, unit: Unit) -> Reading {
    let ts_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Reading {
        name,
        value,
        unit,
        ts_ms,
    }
}

/// The sampler of a configured sensor of node `node_name`, or `None`
/// (logged) when its device cannot be built.
pub fn sampler(sensor: &SensorSection, node_name: &str, now: Instant) -> Option<Sampler> {
    let built = device(sensor, node_name).and_then(|device| Sampler::new(sensor, device, now));
    match built {
        Ok(sampler) => Some(sampler),
        Err(reason) => {
            log::warn!(
                "sensor {} ({}): {reason}; not sampled",
                sensor.name,
                sensor.driver
            );
            None
        }
    }
}

/// A sensor read that returned: its sampler's id, its device back, and
/// what it read.
pub struct SensorRead {
    id: u64,
    device: Device,
    result: ReadResult,
}

impl std::fmt::Debug for SensorRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SensorRead")
            .field("id", &self.id)
            .field(
                "ok",
                &matches!(
                    self.result,
                    ReadResult::Samples(Ok(_)) | ReadResult::Message(Ok(_))
                ),
            )
            .finish_non_exhaustive()
    }
}

/// Every sampler, and the reads under way on blocking threads.
#[derive(Debug)]
pub struct Sensors {
    samplers: Vec<Sampler>,
    /// The id of the next sampler made.
    next_id: u64,
    reads_tx: Sender<SensorRead>,
    reads: Receiver<SensorRead>,
    /// The errors counted by samplers a reload removed.
    retired_errors: u64,
}

impl Sensors {
    /// Samplers for `sections` of node `node_name` (see [`sampler`]), none
    /// read yet.
    pub fn new(sections: &[SensorSection], node_name: &str, now: Instant) -> Sensors {
        let (reads_tx, reads) = smol::channel::unbounded();
        let mut sensors = Sensors {
            samplers: Vec::new(),
            next_id: 0,
            reads_tx,
            reads,
            retired_errors: 0,
        };
        sensors.reload(sections, node_name, now);
        sensors
    }

    /// The sensors of `sections` from now on: a sensor whose section is
    /// unchanged keeps its sampler (schedule, last values, errors, a read
    /// under way); a new or changed one gets a new sampler, first read at
    /// `now`; a removed one is dropped (a read of it under way is dropped
    /// when it returns). Its points stay in the store with their last
    /// values, as after a restart.
    pub fn reload(&mut self, sections: &[SensorSection], node_name: &str, now: Instant) {
        let mut previous = std::mem::take(&mut self.samplers);
        // `mqtt` and `websocket` sensors are not sampled: their messages
        // come when the publisher sends them (`mqtt/source.rs`, `feeds.rs`).
        for section in sections
            .iter()
            .filter(|s| !PUSHED.contains(&s.driver.as_str()))
        {
            match previous.iter().position(|old| old.section == *section) {
                Some(index) => self.samplers.push(previous.swap_remove(index)),
                None => {
                    if let Some(mut sampler) = sampler(section, node_name, now) {
                        sampler.id = self.next_id;
                        self.next_id += 1;
                        self.samplers.push(sampler);
                    }
                }
            }
        }
        self.retired_errors += previous.iter().map(|s| s.errors).sum::<u64>();
    }

    /// Failed reads and error values read, by sensors sampled now and
    /// by those a reload removed.
    pub fn errors(&self) -> u64 {
        self.retired_errors + self.samplers.iter().map(|s| s.errors).sum::<u64>()
    }

    /// Number of sensors sampled.
    pub fn len(&self) -> usize {
        self.samplers.len()
    }

    /// Whether no sensor is sampled.
    pub fn is_empty(&self) -> bool {
        self.samplers.is_empty()
    }

    /// When the next read is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.samplers.iter().filter_map(Sampler::deadline).min()
    }

    /// The next read that returned.
    pub async fn next_read(&self) -> SensorRead {
        match self.reads.recv().await {
            Ok(read) => read,
            // Never: this owns a sender.
            Err(_) => futures_lite::future::pending().await,
        }
    }

    /// Starts a read of every due sensor on a blocking thread, and turns
    /// reads stuck past their timeout into errors.
    pub fn start_due(&mut self, ex: &LocalExecutor<'_>, node: &mut Node, now: Instant) {
        for sampler in &mut self.samplers {
            let stuck = sampler.check_timeout(now);
            publish(node, now, &sampler.name, stuck);
            if !sampler.is_due(now) {
                continue;
            }
            let Some(device) = sampler.start(now) else {
                continue;
            };
            let reads = self.reads_tx.clone();
            let id = sampler.id;
            let timeout = sampler.timeout;
            ex.spawn(async move {
                let (device, result) = read(device, timeout).await;
                let _ = reads.send(SensorRead { id, device, result }).await;
            })
            .detach();
        }
    }

    /// A read returned: its readings go to the core, and due reads start.
    pub fn finish(
        &mut self,
        ex: &LocalExecutor<'_>,
        node: &mut Node,
        now: Instant,
        read: SensorRead,
    ) {
        match self
            .samplers
            .iter_mut()
            .find(|sampler| sampler.id == read.id)
        {
            Some(sampler) => {
                let readings = sampler.finish(now, read.device, read.result);
                publish(node, now, &sampler.name, readings);
            }
            None => log::debug!("a read of a sensor removed by a reload returned: dropped"),
        }
        self.start_due(ex, node, now);
    }
}

/// One read of `device`: a hal device's on a blocking thread (it cannot
/// be stopped; the sampler's timeout marks it in error meanwhile), a
/// message source's as a task that ends at `timeout`.
async fn read(device: Device, timeout: Duration) -> (Device, ReadResult) {
    match device {
        Device::Hal(mut device) => {
            smol::unblock(move || {
                let result = device.read();
                (Device::Hal(device), ReadResult::Samples(result))
            })
            .await
        }
        Device::Fetch(fetch) => {
            let work = async {
                match &fetch {
                    Fetch::Http { url, headers } => fetch::get(url, headers).await,
                    Fetch::Command(argv) => fetch::command(argv, timeout).await,
                }
            };
            let deadline = async {
                smol::Timer::after(timeout).await;
                Err(format!(
                    "read timed out after {}",
                    shoal_config::format_duration(timeout)
                ))
            };
            let result = futures_lite::future::or(work, deadline).await;
            (Device::Fetch(fetch), ReadResult::Message(result))
        }
    }
}

fn publish(node: &mut Node, now: Instant, sensor: &str, readings: Vec<Reading>) {
    for reading in readings {
        let name = reading.name.clone();
        if let Err(error) = node.handle_reading(now, reading) {
            log::warn!("sensor {sensor}: point {name} refused: {error}");
        }
    }
}

#[cfg(test)]
mod tests;
