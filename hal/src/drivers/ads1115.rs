//! TI ADS1115 16-bit ADC on I2C 0x48-0x4b: single-shot conversions of one
//! or more single-ended inputs (AIN0-AIN3 against GND), with a programmable
//! gain, scaled to a unit (`value = volts * scale + offset`).

use crate::bus::I2c;
use crate::{HalError, Sample, Sensor, UnitLabel};
use std::time::Duration;

const REG_CONVERSION: u8 = 0x00;
const REG_CONFIG: u8 = 0x01;

/// Full-scale ranges in volts, by PGA setting 0-5.
pub const GAINS: [f64; 6] = [6.144, 4.096, 2.048, 1.024, 0.512, 0.256];
const QUANTITIES: [&str; 4] = ["a0", "a1", "a2", "a3"];

/// The config register for a single-shot conversion of `channel` at
/// full-scale range index `pga`: OS=1, MUX=100+channel, PGA, MODE=single,
/// 128 SPS, comparator off.
pub fn config_word(channel: u8, pga: u8) -> u16 {
    0x8000 | (u16::from(0b100 | (channel & 3)) << 12) | (u16::from(pga & 7) << 9) | 0x0100 | 0x0083
}

/// An ADS1115.
#[derive(Debug)]
pub struct Ads1115<B> {
    bus: B,
    address: u8,
    channels: Vec<u8>,
    pga: u8,
    scale: f64,
    offset: f64,
    unit: UnitLabel,
}

impl<B: I2c> Ads1115<B> {
    /// Inputs `channels` (0-3) at full-scale `range` volts (one of
    /// [`GAINS`]), scaled as `volts * scale + offset` in `unit`.
    pub fn new(
        bus: B,
        address: u8,
        channels: &[u8],
        range: f64,
        scale: f64,
        offset: f64,
        unit: UnitLabel,
    ) -> Result<Ads1115<B>, HalError> {
        let pga = GAINS
            .iter()
            .position(|&g| (g - range).abs() < 1e-9)
            .ok_or_else(|| {
                HalError::Config(format!(
                    "ads1115 gain {range} V is not one of 6.144, 4.096, 2.048, 1.024, 0.512, 0.256"
                ))
            })? as u8;
        if channels.is_empty() || channels.iter().any(|&c| c > 3) {
            return Err(HalError::Config(
                "ads1115 channels must be 0 to 3".to_owned(),
            ));
        }
        Ok(Ads1115 {
            bus,
            address,
            channels: channels.to_vec(),
            pga,
            scale,
            offset,
            unit,
        })
    }

    fn convert(&mut self, channel: u8) -> Result<f64, HalError> {
        let word = config_word(channel, self.pga).to_be_bytes();
        self.bus
            .write(self.address, &[REG_CONFIG, word[0], word[1]])?;
        // 128 SPS: 7.8 ms per conversion.
        self.bus.delay(Duration::from_millis(8));
        let mut config = [0u8; 2];
        let mut done = false;
        for _ in 0..5 {
            self.bus
                .write_read(self.address, &[REG_CONFIG], &mut config)?;
            if config[0] & 0x80 != 0 {
                done = true;
                break;
            }
            self.bus.delay(Duration::from_millis(2));
        }
        if !done {
            return Err(HalError::NotReady(format!(
                "ADS1115 at {:#04x} did not finish converting AIN{channel}",
                self.address
            )));
        }
        // The config register echoes the input we asked for: anything else
        // is not an ADS1115 (or garbage on the bus).
        let echoed = (u16::from_be_bytes(config) >> 12) & 0x7;
        if echoed != u16::from(0b100 | channel) {
            return Err(HalError::Device(format!(
                "ADS1115 at {:#04x} reports input mux {echoed:#05b}, asked for AIN{channel}",
                self.address
            )));
        }
        let mut raw = [0u8; 2];
        self.bus
            .write_read(self.address, &[REG_CONVERSION], &mut raw)?;
        let counts = f64::from(i16::from_be_bytes(raw));
        Ok(counts * GAINS[self.pga as usize] / 32768.0)
    }
}

impl<B: I2c> Sensor for Ads1115<B> {
    fn quantities(&self) -> &'static [&'static str] {
        &QUANTITIES
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        let mut samples = Vec::with_capacity(self.channels.len());
        for channel in self.channels.clone() {
            let volts = self.convert(channel)?;
            samples.push(Sample {
                quantity: QUANTITIES[channel as usize],
                value: volts * self.scale + self.offset,
                unit: self.unit.clone(),
            });
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusError;
    use crate::fake::{FakeDevice, FakeI2c};
    use crate::Unit;

    fn volts() -> UnitLabel {
        UnitLabel::Typed(Unit::Volt)
    }

    #[test]
    fn the_config_word_follows_the_datasheet() {
        // AIN0 single-ended, ±2.048 V, single shot, 128 SPS, comparator off:
        // 0b1_100_010_1_100_0_0_0_11 = 0xc583.
        assert_eq!(config_word(0, 2), 0xc583);
        assert_eq!(config_word(3, 1), 0xf383);
    }

    #[test]
    fn two_channels_are_converted_and_scaled() {
        let bus = FakeI2c::new();
        let mut device = FakeDevice::scripted();
        // AIN0: done, then 16384 counts = 1.024 V at ±2.048 V.
        device
            .answers
            .push_back(config_word(0, 2).to_be_bytes().to_vec());
        device.answers.push_back(16384i16.to_be_bytes().to_vec());
        // AIN2: done, then -8192 counts = -0.512 V.
        device
            .answers
            .push_back(config_word(2, 2).to_be_bytes().to_vec());
        device.answers.push_back((-8192i16).to_be_bytes().to_vec());
        bus.attach(0x48, device);
        let mut adc = Ads1115::new(
            bus.clone(),
            0x48,
            &[0, 2],
            2.048,
            100.0,
            0.0,
            UnitLabel::Custom("%".into()),
        )
        .expect("valid");
        let samples = adc.read().expect("reads");
        assert_eq!(samples[0].quantity, "a0");
        assert!((samples[0].value - 102.4).abs() < 1e-9);
        assert_eq!(samples[1].quantity, "a2");
        assert!((samples[1].value + 51.2).abs() < 1e-9);
        assert_eq!(samples[1].unit.symbol(), "%");
        let writes = bus.with(0x48, |d| d.writes.clone()).expect("device");
        let word = config_word(0, 2).to_be_bytes();
        assert_eq!(writes[0], vec![REG_CONFIG, word[0], word[1]]);
    }

    #[test]
    fn bad_settings_missing_device_and_garbage() {
        assert!(Ads1115::new(FakeI2c::new(), 0x48, &[0], 3.3, 1.0, 0.0, volts()).is_err());
        assert!(Ads1115::new(FakeI2c::new(), 0x48, &[4], 2.048, 1.0, 0.0, volts()).is_err());
        let mut missing =
            Ads1115::new(FakeI2c::new(), 0x49, &[0], 4.096, 1.0, 0.0, volts()).expect("valid");
        assert_eq!(missing.read(), Err(HalError::Bus(BusError::Nack(0x49))));
        // Garbage: "done", but the wrong input in the config echo.
        let bus = FakeI2c::new();
        let mut device = FakeDevice::scripted();
        device.answers.push_back(vec![0xff, 0xff]);
        bus.attach(0x48, device);
        let mut adc = Ads1115::new(bus, 0x48, &[0], 2.048, 1.0, 0.0, volts()).expect("valid");
        assert!(matches!(adc.read(), Err(HalError::Device(_))));
    }
}
