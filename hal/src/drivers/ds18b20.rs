//! Maxim DS18B20 1-wire thermometer through the Linux `w1-therm` driver:
//! `/sys/bus/w1/devices/28-*/w1_slave` holds two lines, the first ending in
//! `YES` when the scratchpad CRC matched, the second in `t=<milli-°C>`.

use crate::bus::Files;
use crate::{HalError, Sample, Sensor, Unit};
use std::path::{Path, PathBuf};

const DEVICES: &str = "/sys/bus/w1/devices";

/// A DS18B20.
#[derive(Debug)]
pub struct Ds18b20<F> {
    files: F,
    /// `28-...`, or `None` for the first DS18B20 found.
    device: Option<String>,
}

impl<F: Files> Ds18b20<F> {
    /// The thermometer `device` (`28-00000a1b2c3d`), or the first one found.
    pub fn new(files: F, device: Option<String>) -> Ds18b20<F> {
        Ds18b20 { files, device }
    }

    fn path(&self) -> Result<PathBuf, HalError> {
        if let Some(device) = &self.device {
            return Ok(Path::new(DEVICES).join(device).join("w1_slave"));
        }
        let first = self
            .files
            .list(Path::new(DEVICES))?
            .into_iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("28-"))
            })
            .ok_or_else(|| {
                HalError::Device(format!(
                    "no DS18B20 (28-*) in {DEVICES}: is 1-wire enabled (dtoverlay=w1-gpio) and the sensor wired with its 4.7 kΩ pull-up?"
                ))
            })?;
        Ok(first.join("w1_slave"))
    }
}

/// Parses a `w1_slave` file into °C.
pub fn parse_w1_slave(text: &str) -> Result<f64, HalError> {
    let mut lines = text.lines();
    let crc_line = lines.next().unwrap_or("");
    if !crc_line.trim_end().ends_with("YES") {
        return Err(HalError::Device(format!(
            "DS18B20 CRC check failed ({:?}): a long cable or a missing pull-up?",
            crc_line.trim()
        )));
    }
    let milli: i64 = lines
        .next()
        .and_then(|line| line.rsplit_once("t="))
        .and_then(|(_, t)| t.trim().parse().ok())
        .ok_or_else(|| HalError::Device(format!("DS18B20: no temperature in {text:?}")))?;
    if milli == 85_000 {
        // The power-on reset value: the conversion did not happen.
        return Err(HalError::NotReady(
            "DS18B20 reports 85.000 °C, its power-on value: no conversion took place (power supply?)"
                .to_owned(),
        ));
    }
    let celsius = milli as f64 / 1000.0;
    if !(-55.0..=125.0).contains(&celsius) {
        return Err(HalError::Device(format!(
            "DS18B20 reports {celsius} °C, outside its range"
        )));
    }
    Ok(celsius)
}

impl<F: Files> Sensor for Ds18b20<F> {
    fn quantities(&self) -> &'static [&'static str] {
        &["temperature"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        let path = self.path()?;
        let text = self.files.read(&path)?;
        let celsius = parse_w1_slave(&text)?;
        Ok(vec![Sample::new("temperature", celsius, Unit::Celsius)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::MemFs;

    const GOOD: &str =
        "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125\n";
    const PATH: &str = "/sys/bus/w1/devices/28-00000a1b2c3d/w1_slave";

    #[test]
    fn a_sysfs_tree_with_one_sensor_reads_it() {
        let fs = MemFs::new();
        fs.put("/sys/bus/w1/devices/w1_bus_master1/uevent", "");
        fs.put(PATH, GOOD);
        let mut auto = Ds18b20::new(fs.clone(), None);
        assert_eq!(auto.read().expect("reads")[0].value, 23.125);
        let mut named = Ds18b20::new(fs, Some("28-00000a1b2c3d".to_owned()));
        assert_eq!(named.read().expect("reads")[0].value, 23.125);
    }

    #[test]
    fn crc_failure_power_on_value_and_negative_temperatures() {
        assert!(matches!(
            parse_w1_slave("72 01 4b 46 7f ff 0e 10 57 : crc=00 NO\n72 01 4b 46 7f ff 0e 10 57 t=23125\n"),
            Err(HalError::Device(m)) if m.contains("CRC")
        ));
        assert!(matches!(
            parse_w1_slave("50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"),
            Err(HalError::NotReady(m)) if m.contains("85.000")
        ));
        assert_eq!(
            parse_w1_slave(
                "5e ff 4b 46 7f ff 02 10 9a : crc=9a YES\n5e ff 4b 46 7f ff 02 10 9a t=-10125\n"
            ),
            Ok(-10.125)
        );
        assert!(parse_w1_slave("garbage").is_err());
        assert!(parse_w1_slave("x : crc=1 YES\nx t=999999\n").is_err());
    }

    #[test]
    fn an_unplugged_sensor_is_an_error_until_it_is_back() {
        let fs = MemFs::new();
        fs.put(PATH, GOOD);
        let mut sensor = Ds18b20::new(fs.clone(), Some("28-00000a1b2c3d".to_owned()));
        assert!(sensor.read().is_ok());
        fs.remove(PATH);
        assert!(matches!(sensor.read(), Err(HalError::Bus(_))));
        fs.put(PATH, GOOD);
        assert!(sensor.read().is_ok());
        let empty = MemFs::new();
        fs.remove(PATH);
        let mut none = Ds18b20::new(empty, None);
        assert!(none.read().is_err());
    }
}
