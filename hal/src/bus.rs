//! The hardware a driver may touch, as small traits.
//!
//! Drivers are written against these, not against `rppal`: the traits are
//! three I2C operations, a pin level, a duty cycle and file reads, so a
//! register-level fake ([`crate::fake`]) tests every driver, and the Pi
//! backend ([`crate::rpi`]) is a thin wrapper. (rppal also implements the
//! embedded-hal 1.0 traits, but their generic error types would leak into
//! every driver signature and every fake for no gain here.)

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A bus or file-system failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Nobody acknowledged the address: the device is missing or unplugged.
    #[error("no device answers at I2C address {0:#04x} (not connected, or another address?)")]
    Nack(u8),
    /// The bus itself failed (permission, no such bus, a kernel error).
    #[error("I2C bus: {0}")]
    Io(String),
    /// A pin could not be used.
    #[error("GPIO: {0}")]
    Gpio(String),
    /// A file could not be read.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// An I2C bus: the operations the drivers need.
pub trait I2c: Send {
    /// Writes `bytes` to the device at `address`.
    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), BusError>;

    /// Writes `bytes` (usually a register number), then reads `buf.len()`
    /// bytes, in one transaction.
    fn write_read(&mut self, address: u8, bytes: &[u8], buf: &mut [u8]) -> Result<(), BusError>;

    /// Reads `buf.len()` bytes.
    fn read(&mut self, address: u8, buf: &mut [u8]) -> Result<(), BusError>;

    /// Waits for a conversion (a fake returns at once).
    fn delay(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A GPIO input.
pub trait InputPin: Send {
    /// The current level.
    fn is_high(&mut self) -> Result<bool, BusError>;
}

/// A GPIO output.
pub trait OutputPin: Send {
    /// Drives the pin high or low.
    fn set_high(&mut self, high: bool) -> Result<(), BusError>;
}

/// A PWM output.
pub trait Pwm: Send {
    /// Sets the duty cycle, 0.0 to 1.0.
    fn set_duty(&mut self, duty: f64) -> Result<(), BusError>;
}

/// Read access to sysfs and procfs, under a root (`/` on a Pi, a fixture
/// directory in tests).
pub trait Files: Send {
    /// The whole file at `path` (absolute, as on the device).
    fn read(&self, path: &Path) -> Result<String, BusError>;

    /// The entries of directory `path`, sorted.
    fn list(&self, path: &Path) -> Result<Vec<PathBuf>, BusError>;

    /// Free and total bytes of the file system holding `path`.
    fn disk_space(&self, path: &Path) -> Result<(u64, u64), BusError>;
}

/// The real file system under `root`.
#[derive(Debug, Clone)]
pub struct RootFs {
    root: PathBuf,
}

impl RootFs {
    /// Files under `root` (`/` for the real system).
    pub fn new(root: impl Into<PathBuf>) -> RootFs {
        RootFs { root: root.into() }
    }

    fn full(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

fn file_error(path: &Path, error: &io::Error) -> BusError {
    BusError::File {
        path: path.to_owned(),
        reason: error.to_string(),
    }
}

impl Files for RootFs {
    fn read(&self, path: &Path) -> Result<String, BusError> {
        // sysfs and 1-Wire files are a few bytes; a path naming a device
        // such as /dev/zero must not be read until memory runs out.
        use std::io::Read;
        const LIMIT: u64 = 64 * 1024;
        let mut text = String::new();
        std::fs::File::open(self.full(path))
            .and_then(|file| file.take(LIMIT + 1).read_to_string(&mut text))
            .map_err(|e| file_error(path, &e))?;
        if text.len() as u64 > LIMIT {
            return Err(BusError::File {
                path: path.to_owned(),
                reason: format!("larger than {} KiB: not a sensor file", LIMIT / 1024),
            });
        }
        Ok(text)
    }

    fn list(&self, path: &Path) -> Result<Vec<PathBuf>, BusError> {
        let full = self.full(path);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&full)
            .map_err(|e| file_error(path, &e))?
            .filter_map(Result::ok)
            .map(|entry| path.join(entry.file_name()))
            .collect();
        entries.sort_unstable();
        Ok(entries)
    }

    fn disk_space(&self, path: &Path) -> Result<(u64, u64), BusError> {
        let stat = rustix::fs::statvfs(self.full(path)).map_err(|e| BusError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let block = stat.f_frsize.max(1);
        Ok((
            stat.f_bavail.saturating_mul(block),
            stat.f_blocks.saturating_mul(block),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_file_is_read_only_up_to_a_bound() {
        let error = RootFs::new("/")
            .read(Path::new("/dev/zero"))
            .expect_err("refused");
        assert!(error.to_string().contains("larger than 64 KiB"), "{error}");
    }
}
