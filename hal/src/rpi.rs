//! The Raspberry Pi backend: [`crate::bus`] traits on `rppal`.
//!
//! Needs `/dev/i2c-N` (I2C enabled with `raspi-config`, the user in group
//! `i2c`), `/dev/gpiomem` or `/dev/gpiochip*` (group `gpio`), and for PWM
//! the `pwm` overlay.

use crate::bus::{BusError, I2c, InputPin, OutputPin, Pwm};
use rppal::gpio::{Gpio, Level};
use std::time::Duration;

/// I2C bus `/dev/i2c-<bus>`.
#[derive(Debug)]
pub struct RpiI2c {
    i2c: rppal::i2c::I2c,
    address: Option<u8>,
}

fn io(error: impl std::fmt::Display) -> BusError {
    BusError::Io(error.to_string())
}

/// Maps an I2C error: a NACK (ENXIO/EREMOTEIO) means nobody answered.
fn transfer(address: u8, error: rppal::i2c::Error) -> BusError {
    match &error {
        rppal::i2c::Error::Io(e) if matches!(e.raw_os_error(), Some(6) | Some(121)) => {
            BusError::Nack(address)
        }
        _ => io(error),
    }
}

impl RpiI2c {
    /// Opens bus `bus`.
    pub fn open(bus: u8) -> Result<RpiI2c, BusError> {
        let i2c = rppal::i2c::I2c::with_bus(bus).map_err(|e| {
            BusError::Io(format!(
                "cannot open /dev/i2c-{bus}: {e} (enable I2C with raspi-config; the user needs group i2c)"
            ))
        })?;
        Ok(RpiI2c { i2c, address: None })
    }

    fn select(&mut self, address: u8) -> Result<(), BusError> {
        if self.address != Some(address) {
            self.i2c
                .set_slave_address(u16::from(address))
                .map_err(|e| transfer(address, e))?;
            self.address = Some(address);
        }
        Ok(())
    }
}

impl I2c for RpiI2c {
    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), BusError> {
        self.select(address)?;
        self.i2c
            .write(bytes)
            .map(|_| ())
            .map_err(|e| transfer(address, e))
    }

    fn write_read(&mut self, address: u8, bytes: &[u8], buf: &mut [u8]) -> Result<(), BusError> {
        self.select(address)?;
        self.i2c
            .write_read(bytes, buf)
            .map_err(|e| transfer(address, e))
    }

    fn read(&mut self, address: u8, buf: &mut [u8]) -> Result<(), BusError> {
        self.select(address)?;
        self.i2c
            .read(buf)
            .map(|_| ())
            .map_err(|e| transfer(address, e))
    }

    fn delay(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Pull resistor of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pull {
    /// To 3.3 V.
    Up,
    /// To ground.
    Down,
    /// None.
    Off,
}

/// A GPIO input pin (BCM numbering).
#[derive(Debug)]
pub struct RpiInput(rppal::gpio::InputPin);

impl RpiInput {
    /// Pin `bcm` with `pull`.
    pub fn open(bcm: u8, pull: Pull) -> Result<RpiInput, BusError> {
        let pin = Gpio::new()
            .and_then(|gpio| gpio.get(bcm))
            .map_err(|e| BusError::Gpio(format!("pin {bcm}: {e} (the user needs group gpio)")))?;
        Ok(RpiInput(match pull {
            Pull::Up => pin.into_input_pullup(),
            Pull::Down => pin.into_input_pulldown(),
            Pull::Off => pin.into_input(),
        }))
    }
}

impl InputPin for RpiInput {
    fn is_high(&mut self) -> Result<bool, BusError> {
        Ok(self.0.read() == Level::High)
    }
}

/// A GPIO output pin (BCM numbering).
#[derive(Debug)]
pub struct RpiOutput(rppal::gpio::OutputPin);

impl RpiOutput {
    /// Pin `bcm`.
    pub fn open(bcm: u8) -> Result<RpiOutput, BusError> {
        let pin = Gpio::new()
            .and_then(|gpio| gpio.get(bcm))
            .map_err(|e| BusError::Gpio(format!("pin {bcm}: {e} (the user needs group gpio)")))?;
        Ok(RpiOutput(pin.into_output()))
    }
}

impl OutputPin for RpiOutput {
    fn set_high(&mut self, high: bool) -> Result<(), BusError> {
        self.0.write(if high { Level::High } else { Level::Low });
        Ok(())
    }
}

/// A hardware PWM channel (0 or 1) at `frequency` Hz.
#[derive(Debug)]
pub struct RpiPwm {
    pwm: rppal::pwm::Pwm,
}

impl RpiPwm {
    /// Channel `channel` (0: GPIO 12/18, 1: GPIO 13/19 with the pwm overlay).
    pub fn open(channel: u8, frequency: f64) -> Result<RpiPwm, BusError> {
        let channel = match channel {
            0 => rppal::pwm::Channel::Pwm0,
            1 => rppal::pwm::Channel::Pwm1,
            other => {
                return Err(BusError::Gpio(format!(
                    "PWM channel {other} does not exist (0 or 1)"
                )))
            }
        };
        let pwm = rppal::pwm::Pwm::with_frequency(
            channel,
            frequency,
            0.0,
            rppal::pwm::Polarity::Normal,
            true,
        )
        .map_err(|e| {
            BusError::Gpio(format!(
                "PWM: {e} (dtoverlay=pwm or pwm-2chan in config.txt)"
            ))
        })?;
        Ok(RpiPwm { pwm })
    }
}

impl Pwm for RpiPwm {
    fn set_duty(&mut self, duty: f64) -> Result<(), BusError> {
        self.pwm.set_duty_cycle(duty).map_err(io)
    }
}
