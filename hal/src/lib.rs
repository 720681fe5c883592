//! `shoal-hal`: what a shoal agent can measure and switch.
//!
//! - [`Sensor`]s give one or more [`Sample`]s per read (a BME280 gives
//!   temperature, humidity and pressure), each with a typed [`Unit`].
//! - [`Actuator`]s take an [`ActuatorCommand`] (set, toggle, pulse, duty).
//! - Drivers reach hardware only through the small traits in [`bus`]
//!   ([`bus::I2c`], [`bus::InputPin`], [`bus::OutputPin`], [`bus::Pwm`],
//!   [`bus::Files`] for sysfs and procfs). [`fake`] implements them in memory,
//!   register by register, so every driver is tested on any machine; the
//!   `rpi` feature implements them with `rppal` on a Raspberry Pi.
//! - [`sim`] is the deterministic simulated sensor and actuator of the demo
//!   and the mesh simulator.
//!
//! This crate never knows about the network or the clock of the mesh: it
//! turns reads into samples and commands into pin changes, nothing else.
//! Reads block (I2C conversions take milliseconds); the agent runs them off
//! its loop with a timeout.
#![warn(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod bus;
pub mod drivers;
pub mod fake;
pub mod probe;
#[cfg(all(feature = "rpi", target_os = "linux"))]
pub mod rpi;
pub mod sim;

use std::fmt;

/// The unit of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unit {
    /// Degrees Celsius.
    Celsius,
    /// Percent (relative humidity, memory used...).
    Percent,
    /// Hectopascal.
    Hectopascal,
    /// Lux.
    Lux,
    /// Volt.
    Volt,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
    /// A plain number (a load average, a count, a level 0/1).
    None,
}

impl Unit {
    /// The symbol shown to people and carried in points (`°C`, `%`...).
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::Hectopascal => "hPa",
            Unit::Lux => "lx",
            Unit::Volt => "V",
            Unit::Seconds => "s",
            Unit::Bytes => "B",
            Unit::None => "",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// One measured quantity.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// What it measures: `temperature`, `humidity`, `pressure`, `lux`,
    /// `a0`..`a3`, `level`, `count`, `load1`... (valid point names).
    pub quantity: &'static str,
    /// The value; always finite.
    pub value: f64,
    /// Its unit, or a configured unit symbol.
    pub unit: UnitLabel,
}

/// A unit: typed, or a symbol from the configuration (ads1115 scaling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitLabel {
    /// A known unit.
    Typed(Unit),
    /// A configured symbol such as `"ppm"`.
    Custom(String),
}

impl UnitLabel {
    /// The symbol.
    pub fn symbol(&self) -> &str {
        match self {
            UnitLabel::Typed(unit) => unit.symbol(),
            UnitLabel::Custom(text) => text,
        }
    }
}

impl Sample {
    /// A sample in a typed unit.
    pub fn new(quantity: &'static str, value: f64, unit: Unit) -> Sample {
        Sample {
            quantity,
            value,
            unit: UnitLabel::Typed(unit),
        }
    }
}

/// Why a read or a command failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HalError {
    /// The bus or the file system failed (no device answered, permission...).
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// The device answered, but not as its datasheet says (wrong chip id,
    /// a CRC mismatch, an impossible value).
    #[error("{0}")]
    Device(String),
    /// The device is still starting or converting; try again.
    #[error("{0}")]
    NotReady(String),
    /// The configuration cannot work with this device.
    #[error("{0}")]
    Config(String),
}

/// Something that measures.
pub trait Sensor: Send {
    /// The quantities every successful read returns, in order.
    fn quantities(&self) -> &'static [&'static str];

    /// Reads all quantities once. Blocks for the device's conversion time.
    fn read(&mut self) -> Result<Vec<Sample>, HalError>;
}

/// What an actuator is asked to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActuatorCommand {
    /// On (`true`) or off.
    Set(bool),
    /// The opposite of its current state.
    Toggle,
    /// On now, off again after the duration.
    Pulse(std::time::Duration),
    /// PWM duty cycle, 0.0 to 1.0.
    Duty(f64),
}

/// Something that switches.
pub trait Actuator: Send {
    /// Carries out `command`; returns the new state (on/off, or the duty).
    fn apply(&mut self, command: ActuatorCommand) -> Result<f64, HalError>;

    /// Called now and then: ends a pulse whose time is up. Returns the new
    /// state when it changed.
    fn tick(&mut self, now: std::time::Instant) -> Result<Option<f64>, HalError> {
        let _ = now;
        Ok(None)
    }
}
