//! Facts every Pi has: the SoC temperature (`soc_temp`, from
//! `/sys/class/thermal/thermal_zone<N>/temp`) and the system itself
//! (`system`: load, memory in use, uptime, free disk).

use crate::bus::Files;
use crate::{HalError, Sample, Sensor, Unit};
use std::path::{Path, PathBuf};

/// The SoC temperature of thermal zone `zone`.
#[derive(Debug)]
pub struct SocTemp<F> {
    files: F,
    path: PathBuf,
}

impl<F: Files> SocTemp<F> {
    /// Thermal zone `zone` (0 on a Pi).
    pub fn new(files: F, zone: u32) -> SocTemp<F> {
        SocTemp {
            files,
            path: PathBuf::from(format!("/sys/class/thermal/thermal_zone{zone}/temp")),
        }
    }
}

impl<F: Files> Sensor for SocTemp<F> {
    fn quantities(&self) -> &'static [&'static str] {
        &["temperature"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        let text = self.files.read(&self.path)?;
        let milli: i64 = text.trim().parse().map_err(|_| {
            HalError::Device(format!(
                "{}: {:?} is not a temperature",
                self.path.display(),
                text.trim()
            ))
        })?;
        let celsius = milli as f64 / 1000.0;
        if !(-40.0..=150.0).contains(&celsius) {
            return Err(HalError::Device(format!(
                "SoC temperature {celsius} °C is impossible"
            )));
        }
        Ok(vec![Sample::new("temperature", celsius, Unit::Celsius)])
    }
}

/// Load average, memory in use, uptime and free disk space.
#[derive(Debug)]
pub struct System<F> {
    files: F,
    disk: PathBuf,
}

impl<F: Files> System<F> {
    /// The system, with the free space of the file system holding `disk`.
    pub fn new(files: F, disk: impl Into<PathBuf>) -> System<F> {
        System {
            files,
            disk: disk.into(),
        }
    }
}

fn number(text: &str, what: &str) -> Result<f64, HalError> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| HalError::Device(format!("{what}: {text:?} is not a number")))
}

/// `MemTotal` and `MemAvailable` of `/proc/meminfo`, in kB.
fn meminfo(text: &str) -> Result<(f64, f64), HalError> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| HalError::Device(format!("/proc/meminfo has no {name}")))
    };
    Ok((field("MemTotal:")?, field("MemAvailable:")?))
}

impl<F: Files> Sensor for System<F> {
    fn quantities(&self) -> &'static [&'static str] {
        &["load1", "memory_used", "uptime", "disk_free"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        let load = self.files.read(Path::new("/proc/loadavg"))?;
        let load1 = number(
            load.split_whitespace().next().unwrap_or(""),
            "/proc/loadavg",
        )?;
        let (total, available) = meminfo(&self.files.read(Path::new("/proc/meminfo"))?)?;
        if total <= 0.0 {
            return Err(HalError::Device("/proc/meminfo: MemTotal is 0".to_owned()));
        }
        let uptime = self.files.read(Path::new("/proc/uptime"))?;
        let uptime = number(
            uptime.split_whitespace().next().unwrap_or(""),
            "/proc/uptime",
        )?;
        let (free, size) = self.files.disk_space(&self.disk)?;
        let disk_free = if size == 0 {
            0.0
        } else {
            free as f64 * 100.0 / size as f64
        };
        Ok(vec![
            Sample::new("load1", load1, Unit::None),
            Sample::new(
                "memory_used",
                ((total - available) * 100.0 / total).clamp(0.0, 100.0),
                Unit::Percent,
            ),
            Sample::new("uptime", uptime, Unit::Seconds),
            Sample::new("disk_free", disk_free, Unit::Percent),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::RootFs;
    use crate::fake::MemFs;

    #[test]
    fn soc_temp_reads_millidegrees_from_a_sysfs_fixture() {
        let dir = std::env::temp_dir().join(format!("shoal-hal-sysfs-{}", std::process::id()));
        let zone = dir.join("sys/class/thermal/thermal_zone0");
        std::fs::create_dir_all(&zone).expect("fixture");
        std::fs::write(zone.join("temp"), "48312\n").expect("fixture");
        let mut sensor = SocTemp::new(RootFs::new(&dir), 0);
        let reading = sensor.read();
        let mut missing = SocTemp::new(RootFs::new(&dir), 3);
        let missing = missing.read();
        std::fs::write(zone.join("temp"), "hot\n").expect("fixture");
        let garbage = sensor.read();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(reading.expect("reads")[0].value, 48.312);
        assert!(matches!(missing, Err(HalError::Bus(_))));
        assert!(matches!(garbage, Err(HalError::Device(_))));
    }

    #[test]
    fn system_figures_come_from_proc() {
        let mut fs = MemFs::new();
        fs.space = (25, 100);
        fs.put("/proc/loadavg", "0.42 0.30 0.10 1/123 4567\n");
        fs.put("/proc/meminfo", "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     750000 kB\n");
        fs.put("/proc/uptime", "12345.67 40000.00\n");
        let mut system = System::new(fs.clone(), "/");
        let samples = system.read().expect("reads");
        let values: Vec<(&str, f64)> = samples.iter().map(|s| (s.quantity, s.value)).collect();
        assert_eq!(
            values,
            [
                ("load1", 0.42),
                ("memory_used", 25.0),
                ("uptime", 12345.67),
                ("disk_free", 25.0)
            ]
        );
        fs.put("/proc/meminfo", "MemTotal: lots\n");
        assert!(system.read().is_err());
    }

    #[test]
    fn the_real_system_of_this_machine_reads() {
        let mut system = System::new(RootFs::new("/"), "/");
        let samples = system.read().expect("this Linux has /proc");
        assert!(samples.iter().all(|s| s.value.is_finite()));
        assert!(samples[3].value > 0.0 && samples[3].value <= 100.0);
    }
}
