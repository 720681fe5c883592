//! Sensirion SHT3x (SHT30/31/35) on I2C 0x44/0x45: single-shot measurement,
//! high repeatability, each 16-bit word checked with the datasheet's CRC-8.

use crate::bus::I2c;
use crate::{HalError, Sample, Sensor, Unit};
use std::time::Duration;

/// Single shot, high repeatability, no clock stretching.
pub const MEASURE: [u8; 2] = [0x24, 0x00];

/// The datasheet's CRC-8: polynomial 0x31, init 0xff, no reflection.
pub fn crc8(bytes: &[u8]) -> u8 {
    let mut crc: u8 = 0xff;
    for &byte in bytes {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// An SHT3x.
#[derive(Debug)]
pub struct Sht3x<B> {
    bus: B,
    address: u8,
}

impl<B: I2c> Sht3x<B> {
    /// The sensor at `address` on `bus`.
    pub fn new(bus: B, address: u8) -> Sht3x<B> {
        Sht3x { bus, address }
    }
}

impl<B: I2c> Sensor for Sht3x<B> {
    fn quantities(&self) -> &'static [&'static str] {
        &["temperature", "humidity"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        self.bus.write(self.address, &MEASURE)?;
        // High repeatability: at most 15.5 ms.
        self.bus.delay(Duration::from_millis(16));
        let mut data = [0u8; 6];
        self.bus.read(self.address, &mut data)?;
        for (word, name) in [(0, "temperature"), (3, "humidity")] {
            let expected = crc8(&data[word..word + 2]);
            if data[word + 2] != expected {
                return Err(HalError::Device(format!(
                    "SHT3x at {:#04x}: {name} CRC {:#04x}, expected {expected:#04x} (noise on the bus?)",
                    self.address,
                    data[word + 2]
                )));
            }
        }
        let raw_t = f64::from(u16::from_be_bytes([data[0], data[1]]));
        let raw_h = f64::from(u16::from_be_bytes([data[3], data[4]]));
        Ok(vec![
            Sample::new(
                "temperature",
                -45.0 + 175.0 * raw_t / 65535.0,
                Unit::Celsius,
            ),
            Sample::new(
                "humidity",
                (100.0 * raw_h / 65535.0).clamp(0.0, 100.0),
                Unit::Percent,
            ),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusError;
    use crate::fake::{FakeDevice, FakeI2c};

    fn answer(raw_t: u16, raw_h: u16) -> Vec<u8> {
        let t = raw_t.to_be_bytes();
        let h = raw_h.to_be_bytes();
        vec![t[0], t[1], crc8(&t), h[0], h[1], crc8(&h)]
    }

    #[test]
    fn the_datasheet_crc_example() {
        // SHT3x datasheet 4.12: CRC(0xBEEF) = 0x92.
        assert_eq!(crc8(&[0xbe, 0xef]), 0x92);
    }

    #[test]
    fn a_measurement_converts_with_the_datasheet_formulas() {
        let bus = FakeI2c::new();
        let mut device = FakeDevice::scripted();
        // 0x6666 = 26214: T = -45 + 175 * 26214 / 65535 = 25.0 °C.
        // 0x8000 = 32768: RH = 50.0 %.
        device.answers.push_back(answer(0x6666, 0x8000));
        bus.attach(0x44, device);
        let mut sensor = Sht3x::new(bus.clone(), 0x44);
        let samples = sensor.read().expect("reads");
        assert!(
            (samples[0].value - 25.0).abs() < 0.01,
            "{}",
            samples[0].value
        );
        assert!((samples[1].value - 50.0).abs() < 0.01);
        assert_eq!(
            bus.with(0x44, |d| d.writes.clone()),
            Some(vec![MEASURE.to_vec()])
        );
    }

    #[test]
    fn a_crc_mismatch_is_an_error() {
        let bus = FakeI2c::new();
        let mut device = FakeDevice::scripted();
        let mut bad = answer(0x6666, 0x8000);
        bad[5] ^= 1;
        device.answers.push_back(bad);
        bus.attach(0x44, device);
        let error = Sht3x::new(bus, 0x44).read().expect_err("bad CRC");
        assert!(error.to_string().contains("humidity CRC"), "{error}");
    }

    #[test]
    fn a_missing_device_and_garbage_are_errors() {
        let mut missing = Sht3x::new(FakeI2c::new(), 0x45);
        assert_eq!(missing.read(), Err(HalError::Bus(BusError::Nack(0x45))));
        // A device that answers all ones: the CRC of 0xffff is not 0xff.
        let bus = FakeI2c::new();
        bus.attach(0x44, FakeDevice::scripted());
        assert!(matches!(
            Sht3x::new(bus, 0x44).read(),
            Err(HalError::Device(_))
        ));
    }
}
