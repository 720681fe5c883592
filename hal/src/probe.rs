//! `shoal probe`: which known chips answer on an I2C bus.
//!
//! Every address from 0x03 to 0x77 gets a one-byte read; those that
//! acknowledge are identified by what their datasheet says is there: the
//! BME280/BMP280 chip-id register, the SHT3x status register with its CRC,
//! the ADS1115 config register's reset value, and the BH1750 answering its
//! power-on command at one of its two addresses.

use crate::bus::{BusError, I2c};
use crate::drivers::sht3x::crc8;

/// One device that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its address.
    pub address: u8,
    /// The driver for it, when recognised.
    pub driver: Option<&'static str>,
    /// How it was recognised, or why not.
    pub evidence: String,
}

impl Found {
    /// A ready-to-paste `[[sensor]]` block, for a recognised chip.
    pub fn sensor_block(&self, bus: u8) -> Option<String> {
        let driver = self.driver?;
        let name = match driver {
            "bme280" | "bmp280" | "sht3x" => "climate",
            "bh1750" => "light",
            _ => "adc",
        };
        let mut block = format!(
            "[[sensor]]\nname = \"{name}\"\ndriver = \"{driver}\"\nbus = {bus}\naddress = {:#04x}\ninterval = \"10s\"\n",
            self.address
        );
        if driver == "ads1115" {
            block.push_str("channels = [0]\ngain = 4.096\n");
        }
        Some(block)
    }
}

/// Scans `bus`. A bus that fails as a whole (not a NACK) is an error.
pub fn scan(bus: &mut impl I2c) -> Result<Vec<Found>, BusError> {
    let mut found = Vec::new();
    for address in 0x03..=0x77u8 {
        let mut byte = [0u8];
        match bus.read(address, &mut byte) {
            Ok(()) => found.push(identify(bus, address)),
            Err(BusError::Nack(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(found)
}

fn identify(bus: &mut impl I2c, address: u8) -> Found {
    let known = |driver: &'static str, evidence: String| Found {
        address,
        driver: Some(driver),
        evidence,
    };
    match address {
        0x76 | 0x77 => {
            let mut id = [0u8];
            if bus.write_read(address, &[0xd0], &mut id).is_ok() {
                match id[0] {
                    0x60 => return known("bme280", "chip id 0x60".to_owned()),
                    0x56..=0x58 => return known("bmp280", format!("chip id {:#04x}", id[0])),
                    _ => {}
                }
            }
        }
        0x44 | 0x45 => {
            let mut status = [0u8; 3];
            let answered =
                bus.write(address, &[0xf3, 0x2d]).is_ok() && bus.read(address, &mut status).is_ok();
            if answered && crc8(&status[..2]) == status[2] {
                return known("sht3x", "status register with a valid CRC".to_owned());
            }
        }
        0x48..=0x4b => {
            let mut config = [0u8; 2];
            if bus.write_read(address, &[0x01], &mut config).is_ok() {
                let word = u16::from_be_bytes(config);
                // The reset value 0x8583, or any idle single-shot setting.
                if word == 0x8583 || word & 0x8100 == 0x8100 {
                    return known("ads1115", format!("config register {word:#06x}"));
                }
            }
        }
        0x23 | 0x5c if bus.write(address, &[0x01]).is_ok() => {
            return known("bh1750", "accepts the power-on command".to_owned());
        }
        _ => {}
    }
    Found {
        address,
        driver: None,
        evidence: "answers, but is not a chip shoal knows".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeDevice, FakeI2c};

    #[test]
    fn a_bus_with_four_known_chips_and_a_stranger() {
        let mut bus = FakeI2c::new();
        let mut bme = FakeDevice::registers();
        bme.set(0xd0, &[0x60]);
        bus.attach(0x76, bme);
        let mut sht = FakeDevice::scripted();
        sht.answers.push_back(vec![0]);
        sht.answers.push_back(vec![0x80, 0x10, crc8(&[0x80, 0x10])]);
        bus.attach(0x44, sht);
        let mut adc = FakeDevice::registers();
        adc.set(0x01, &[0x85, 0x83]);
        bus.attach(0x48, adc);
        bus.attach(0x23, FakeDevice::scripted());
        bus.attach(0x50, FakeDevice::registers());
        let found = scan(&mut bus).expect("scans");
        let drivers: Vec<(u8, Option<&str>)> =
            found.iter().map(|f| (f.address, f.driver)).collect();
        assert_eq!(
            drivers,
            [
                (0x23, Some("bh1750")),
                (0x44, Some("sht3x")),
                (0x48, Some("ads1115")),
                (0x50, None),
                (0x76, Some("bme280")),
            ]
        );
        let block = found[4].sensor_block(1).expect("known");
        assert!(
            block.contains("driver = \"bme280\"\nbus = 1\naddress = 0x76\n"),
            "{block}"
        );
        assert_eq!(found[3].sensor_block(1), None);
    }

    #[test]
    fn a_broken_bus_is_an_error_and_an_empty_one_finds_nothing() {
        let mut empty = FakeI2c::new();
        assert_eq!(scan(&mut empty), Ok(Vec::new()));
        let mut broken = FakeI2c::new();
        *broken.broken.lock().expect("lock") = Some(BusError::Io("Permission denied".to_owned()));
        assert!(scan(&mut broken).is_err());
    }
}
