//! ROHM BH1750 ambient light sensor on I2C 0x23/0x5c: one-time high
//! resolution mode (1 lx, 120-180 ms), lux = count / 1.2.

use crate::bus::I2c;
use crate::{HalError, Sample, Sensor, Unit};
use std::time::Duration;

/// Power on.
pub const POWER_ON: u8 = 0x01;
/// One-time high-resolution measurement, then power down.
pub const ONE_TIME_HIGH_RES: u8 = 0x20;

/// A BH1750.
#[derive(Debug)]
pub struct Bh1750<B> {
    bus: B,
    address: u8,
}

impl<B: I2c> Bh1750<B> {
    /// The sensor at `address` on `bus`.
    pub fn new(bus: B, address: u8) -> Bh1750<B> {
        Bh1750 { bus, address }
    }
}

impl<B: I2c> Sensor for Bh1750<B> {
    fn quantities(&self) -> &'static [&'static str] {
        &["lux"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        self.bus.write(self.address, &[POWER_ON])?;
        self.bus.write(self.address, &[ONE_TIME_HIGH_RES])?;
        self.bus.delay(Duration::from_millis(180));
        let mut data = [0u8; 2];
        self.bus.read(self.address, &mut data)?;
        let count = u16::from_be_bytes(data);
        // The chip has no checksum; all ones is what a floating bus reads.
        if count == u16::MAX {
            return Err(HalError::Device(format!(
                "BH1750 at {:#04x} read 0xffff (a floating bus, or saturated by direct sun)",
                self.address
            )));
        }
        Ok(vec![Sample::new("lux", f64::from(count) / 1.2, Unit::Lux)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusError;
    use crate::fake::{FakeDevice, FakeI2c};

    #[test]
    fn a_reading_is_count_over_1_2() {
        let bus = FakeI2c::new();
        let mut device = FakeDevice::scripted();
        // Datasheet example: 0x83 0x90 = 33680 counts = 28067 lx.
        device.answers.push_back(vec![0x83, 0x90]);
        bus.attach(0x23, device);
        let samples = Bh1750::new(bus.clone(), 0x23).read().expect("reads");
        assert!((samples[0].value - 28_066.67).abs() < 0.01);
        assert_eq!(
            bus.with(0x23, |d| d.writes.clone()),
            Some(vec![vec![POWER_ON], vec![ONE_TIME_HIGH_RES]])
        );
        assert_eq!(
            *bus.waited.lock().expect("lock"),
            Duration::from_millis(180)
        );
    }

    #[test]
    fn a_missing_device_and_a_floating_bus_are_errors() {
        assert_eq!(
            Bh1750::new(FakeI2c::new(), 0x5c).read(),
            Err(HalError::Bus(BusError::Nack(0x5c)))
        );
        let bus = FakeI2c::new();
        let mut floating = FakeDevice::scripted();
        floating.answers.push_back(vec![0xff, 0xff]);
        bus.attach(0x23, floating);
        assert!(matches!(
            Bh1750::new(bus, 0x23).read(),
            Err(HalError::Device(_))
        ));
    }
}
