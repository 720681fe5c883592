//! Bosch BME280 (temperature, humidity, pressure) and BMP280 (temperature,
//! pressure) on I2C 0x76/0x77, in forced mode: one conversion per read,
//! the chip sleeps in between. Compensation is the datasheet's
//! double-precision formulas (BME280 datasheet 8.1, BMP280 datasheet 8.1).

use crate::bus::{BusError, I2c};
use crate::{HalError, Sample, Sensor, Unit};
use std::time::Duration;

const REG_ID: u8 = 0xd0;
const REG_CALIB_TP: u8 = 0x88;
const REG_CALIB_H1: u8 = 0xa1;
const REG_CALIB_H2: u8 = 0xe1;
const REG_CTRL_HUM: u8 = 0xf2;
const REG_STATUS: u8 = 0xf3;
const REG_CTRL_MEAS: u8 = 0xf4;
const REG_DATA: u8 = 0xf7;
/// Temperature oversampling x1 (bits 7-5 = 001), pressure x1 (4-2 = 001),
/// forced mode (1-0 = 01).
#[allow(clippy::unusual_byte_groupings)]
const CTRL_MEAS_FORCED: u8 = 0b001_001_01;
/// Humidity oversampling x1.
const CTRL_HUM_X1: u8 = 0b001;
/// A raw reading of this value means "measurement skipped".
const SKIPPED_20BIT: i32 = 0x80000;
const SKIPPED_16BIT: i32 = 0x8000;

/// Which chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chip {
    /// BME280: also humidity. Chip id 0x60.
    Bme280,
    /// BMP280: no humidity. Chip id 0x58 (0x56, 0x57 on samples).
    Bmp280,
}

/// The factory calibration read from the chip.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[allow(missing_docs)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// Parses the temperature/pressure block (0x88..0x9f, 24 bytes).
    pub fn from_tp(b: &[u8; 24]) -> Calibration {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([b[i], b[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            ..Calibration::default()
        }
    }

    /// Adds the humidity block: 0xa1 and 0xe1..0xe7.
    pub fn with_humidity(mut self, h1: u8, e: &[u8; 7]) -> Calibration {
        self.h1 = h1;
        self.h2 = i16::from_le_bytes([e[0], e[1]]);
        self.h3 = e[2];
        self.h4 = (i16::from(e[3] as i8) << 4) | i16::from(e[4] & 0x0f);
        self.h5 = (i16::from(e[5] as i8) << 4) | i16::from(e[4] >> 4);
        self.h6 = e[6] as i8;
        self
    }

    /// Temperature in °C and `t_fine` from a raw 20-bit reading.
    pub fn temperature(&self, adc_t: i32) -> (f64, f64) {
        let adc = f64::from(adc_t);
        let t1 = f64::from(self.t1);
        let var1 = (adc / 16384.0 - t1 / 1024.0) * f64::from(self.t2);
        let d = adc / 131072.0 - t1 / 8192.0;
        let var2 = d * d * f64::from(self.t3);
        let t_fine = var1 + var2;
        (t_fine / 5120.0, t_fine)
    }

    /// Pressure in Pa from a raw 20-bit reading; `None` when the
    /// calibration would divide by zero.
    pub fn pressure(&self, adc_p: i32, t_fine: f64) -> Option<f64> {
        let mut var1 = t_fine / 2.0 - 64000.0;
        let mut var2 = var1 * var1 * f64::from(self.p6) / 32768.0;
        var2 += var1 * f64::from(self.p5) * 2.0;
        var2 = var2 / 4.0 + f64::from(self.p4) * 65536.0;
        var1 = (f64::from(self.p3) * var1 * var1 / 524288.0 + f64::from(self.p2) * var1) / 524288.0;
        var1 = (1.0 + var1 / 32768.0) * f64::from(self.p1);
        if var1 == 0.0 {
            return None;
        }
        let mut p = 1048576.0 - f64::from(adc_p);
        p = (p - var2 / 4096.0) * 6250.0 / var1;
        var1 = f64::from(self.p9) * p * p / 2147483648.0;
        var2 = p * f64::from(self.p8) / 32768.0;
        Some(p + (var1 + var2 + f64::from(self.p7)) / 16.0)
    }

    /// Relative humidity in % from a raw 16-bit reading.
    pub fn humidity(&self, adc_h: i32, t_fine: f64) -> f64 {
        let mut h = t_fine - 76800.0;
        h = (f64::from(adc_h) - (f64::from(self.h4) * 64.0 + f64::from(self.h5) / 16384.0 * h))
            * (f64::from(self.h2) / 65536.0
                * (1.0
                    + f64::from(self.h6) / 67108864.0
                        * h
                        * (1.0 + f64::from(self.h3) / 67108864.0 * h)));
        h *= 1.0 - f64::from(self.h1) * h / 524288.0;
        h.clamp(0.0, 100.0)
    }
}

/// A BME280 or BMP280.
#[derive(Debug)]
pub struct Bme280<B> {
    bus: B,
    address: u8,
    chip: Chip,
    /// Read at the first read and again after any bus error (the chip may
    /// have been replaced or power-cycled).
    calibration: Option<Calibration>,
}

impl<B: I2c> Bme280<B> {
    /// The chip `chip` at `address` on `bus`.
    pub fn new(bus: B, address: u8, chip: Chip) -> Bme280<B> {
        Bme280 {
            bus,
            address,
            chip,
            calibration: None,
        }
    }

    fn init(&mut self) -> Result<Calibration, HalError> {
        let mut id = [0u8];
        self.bus.write_read(self.address, &[REG_ID], &mut id)?;
        let expected: &[u8] = match self.chip {
            Chip::Bme280 => &[0x60],
            Chip::Bmp280 => &[0x56, 0x57, 0x58],
        };
        if !expected.contains(&id[0]) {
            let found = match id[0] {
                0x60 => " (a BME280: use driver = \"bme280\")",
                0x56..=0x58 => " (a BMP280: use driver = \"bmp280\")",
                _ => "",
            };
            return Err(HalError::Device(format!(
                "chip id {:#04x} at {:#04x} is not a {:?}{found}",
                id[0], self.address, self.chip
            )));
        }
        let mut tp = [0u8; 24];
        self.bus
            .write_read(self.address, &[REG_CALIB_TP], &mut tp)?;
        let mut calibration = Calibration::from_tp(&tp);
        if self.chip == Chip::Bme280 {
            let mut h1 = [0u8];
            self.bus
                .write_read(self.address, &[REG_CALIB_H1], &mut h1)?;
            let mut e = [0u8; 7];
            self.bus.write_read(self.address, &[REG_CALIB_H2], &mut e)?;
            calibration = calibration.with_humidity(h1[0], &e);
        }
        // An erased or absent calibration reads as all zeros or all ones.
        if calibration.t1 == 0 || calibration.p1 == 0 || calibration.t1 == u16::MAX {
            return Err(HalError::Device(format!(
                "calibration data at {:#04x} is blank (dig_T1 {}, dig_P1 {})",
                self.address, calibration.t1, calibration.p1
            )));
        }
        Ok(calibration)
    }

    fn measure(&mut self, calibration: &Calibration) -> Result<Vec<Sample>, HalError> {
        if self.chip == Chip::Bme280 {
            self.bus.write(self.address, &[REG_CTRL_HUM, CTRL_HUM_X1])?;
        }
        self.bus
            .write(self.address, &[REG_CTRL_MEAS, CTRL_MEAS_FORCED])?;
        // x1 oversampling of three quantities: at most 9.3 ms.
        self.bus.delay(Duration::from_millis(10));
        let mut status = [0u8];
        let mut ready = false;
        for _ in 0..5 {
            self.bus
                .write_read(self.address, &[REG_STATUS], &mut status)?;
            if status[0] & 0x08 == 0 {
                ready = true;
                break;
            }
            self.bus.delay(Duration::from_millis(2));
        }
        if !ready {
            return Err(HalError::NotReady(format!(
                "{:?} at {:#04x} is still measuring after 18 ms",
                self.chip, self.address
            )));
        }
        let mut data = [0u8; 8];
        let len = if self.chip == Chip::Bme280 { 8 } else { 6 };
        self.bus
            .write_read(self.address, &[REG_DATA], &mut data[..len])?;
        let raw20 = |i: usize| {
            (i32::from(data[i]) << 12)
                | (i32::from(data[i + 1]) << 4)
                | (i32::from(data[i + 2]) >> 4)
        };
        let (adc_p, adc_t) = (raw20(0), raw20(3));
        if adc_t == SKIPPED_20BIT || adc_p == SKIPPED_20BIT {
            return Err(HalError::Device(format!(
                "{:?} at {:#04x} skipped the measurement (raw {adc_t:#x}/{adc_p:#x})",
                self.chip, self.address
            )));
        }
        let (temperature, t_fine) = calibration.temperature(adc_t);
        let pressure = calibration
            .pressure(adc_p, t_fine)
            .ok_or_else(|| HalError::Device("pressure calibration divides by zero".to_owned()))?;
        // Outside the chip's operating range means garbage, not weather.
        if !(-40.0..=85.0).contains(&temperature) || !(30_000.0..=110_000.0).contains(&pressure) {
            return Err(HalError::Device(format!(
                "{:?} at {:#04x} gave an impossible reading ({temperature:.1} °C, {:.1} hPa)",
                self.chip,
                self.address,
                pressure / 100.0
            )));
        }
        let mut samples = vec![Sample::new("temperature", temperature, Unit::Celsius)];
        if self.chip == Chip::Bme280 {
            let adc_h = (i32::from(data[6]) << 8) | i32::from(data[7]);
            if adc_h == SKIPPED_16BIT {
                return Err(HalError::Device("humidity measurement skipped".to_owned()));
            }
            samples.push(Sample::new(
                "humidity",
                calibration.humidity(adc_h, t_fine),
                Unit::Percent,
            ));
        }
        samples.push(Sample::new("pressure", pressure / 100.0, Unit::Hectopascal));
        Ok(samples)
    }
}

impl<B: I2c> Sensor for Bme280<B> {
    fn quantities(&self) -> &'static [&'static str] {
        match self.chip {
            Chip::Bme280 => &["temperature", "humidity", "pressure"],
            Chip::Bmp280 => &["temperature", "pressure"],
        }
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        let calibration = match self.calibration {
            Some(calibration) => calibration,
            None => {
                let calibration = self.init()?;
                self.calibration = Some(calibration);
                calibration
            }
        };
        let result = self.measure(&calibration);
        if matches!(
            result,
            Err(HalError::Bus(BusError::Nack(_) | BusError::Io(_)))
        ) {
            self.calibration = None;
        }
        result
    }
}

#[cfg(test)]
mod tests;
