//! In-memory hardware for tests: an I2C bus of register-level fake devices,
//! pins whose level a test sets, and a file tree for sysfs and procfs.

use crate::bus::{BusError, Files, I2c, InputPin, OutputPin, Pwm};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One fake I2C device: 256 byte registers with an auto-incrementing
/// pointer, or scripted answers for command-based chips.
#[derive(Debug, Clone)]
pub struct FakeDevice {
    /// Register contents.
    pub registers: [u8; 256],
    /// The register the next read starts at (set by the first written byte).
    pub pointer: u8,
    /// Scripted answers: each read takes the next one instead of registers.
    pub answers: VecDeque<Vec<u8>>,
    /// Every write, in order.
    pub writes: Vec<Vec<u8>>,
    /// Writes with more than one byte store the rest into registers from
    /// the pointer on (register-based chips); off for command-based ones.
    pub register_writes: bool,
}

impl FakeDevice {
    /// A register-based device, all registers zero.
    pub fn registers() -> FakeDevice {
        FakeDevice {
            registers: [0; 256],
            pointer: 0,
            answers: VecDeque::new(),
            writes: Vec::new(),
            register_writes: true,
        }
    }

    /// A command-based device answering from a script.
    pub fn scripted() -> FakeDevice {
        FakeDevice {
            register_writes: false,
            ..FakeDevice::registers()
        }
    }

    /// Sets registers from `start` on.
    pub fn set(&mut self, start: u8, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            self.registers[(start as usize + i) % 256] = *byte;
        }
    }
}

/// A fake I2C bus, shareable between a test and the driver under test.
#[derive(Debug, Clone, Default)]
pub struct FakeI2c {
    /// The devices by address; an address without one NACKs.
    pub devices: Arc<Mutex<BTreeMap<u8, FakeDevice>>>,
    /// When set, every transfer fails with this bus error.
    pub broken: Arc<Mutex<Option<BusError>>>,
    /// Total time drivers asked to wait.
    pub waited: Arc<Mutex<Duration>>,
}

impl FakeI2c {
    /// An empty bus.
    pub fn new() -> FakeI2c {
        FakeI2c::default()
    }

    /// Adds (or replaces) the device at `address`.
    pub fn attach(&self, address: u8, device: FakeDevice) {
        self.lock().insert(address, device);
    }

    /// Removes the device at `address` (it is unplugged).
    pub fn detach(&self, address: u8) -> Option<FakeDevice> {
        self.lock().remove(&address)
    }

    /// Runs `change` on the device at `address`.
    pub fn with<T>(&self, address: u8, change: impl FnOnce(&mut FakeDevice) -> T) -> Option<T> {
        self.lock().get_mut(&address).map(change)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u8, FakeDevice>> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check(&self) -> Result<(), BusError> {
        match self.broken.lock().map(|b| b.clone()) {
            Ok(Some(error)) => Err(error),
            _ => Ok(()),
        }
    }
}

impl I2c for FakeI2c {
    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), BusError> {
        self.check()?;
        let mut devices = self.lock();
        let device = devices.get_mut(&address).ok_or(BusError::Nack(address))?;
        device.writes.push(bytes.to_vec());
        if let Some((&first, rest)) = bytes.split_first() {
            device.pointer = first;
            if device.register_writes {
                let start = first;
                for (i, byte) in rest.iter().enumerate() {
                    device.registers[(start as usize + i) % 256] = *byte;
                }
            }
        }
        Ok(())
    }

    fn write_read(&mut self, address: u8, bytes: &[u8], buf: &mut [u8]) -> Result<(), BusError> {
        self.write(address, bytes)?;
        self.read(address, buf)
    }

    fn read(&mut self, address: u8, buf: &mut [u8]) -> Result<(), BusError> {
        self.check()?;
        let mut devices = self.lock();
        let device = devices.get_mut(&address).ok_or(BusError::Nack(address))?;
        if let Some(answer) = device.answers.pop_front() {
            for (i, byte) in buf.iter_mut().enumerate() {
                *byte = answer.get(i).copied().unwrap_or(0xff);
            }
            return Ok(());
        }
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte = device.registers[(device.pointer as usize + i) % 256];
        }
        Ok(())
    }

    fn delay(&mut self, duration: Duration) {
        if let Ok(mut waited) = self.waited.lock() {
            *waited += duration;
        }
    }
}

/// A pin whose input level a test sets, and whose output level it reads.
#[derive(Debug, Clone, Default)]
pub struct FakePin {
    /// The level.
    pub level: Arc<Mutex<bool>>,
    /// Every level driven, in order.
    pub history: Arc<Mutex<Vec<bool>>>,
    /// Duty cycles set, in order (PWM).
    pub duties: Arc<Mutex<Vec<f64>>>,
}

impl FakePin {
    /// A low pin.
    pub fn new() -> FakePin {
        FakePin::default()
    }

    /// Sets the input level.
    pub fn put(&self, high: bool) {
        if let Ok(mut level) = self.level.lock() {
            *level = high;
        }
    }

    /// The current level.
    pub fn get(&self) -> bool {
        self.level.lock().map(|l| *l).unwrap_or(false)
    }
}

impl InputPin for FakePin {
    fn is_high(&mut self) -> Result<bool, BusError> {
        Ok(self.get())
    }
}

impl OutputPin for FakePin {
    fn set_high(&mut self, high: bool) -> Result<(), BusError> {
        self.put(high);
        if let Ok(mut history) = self.history.lock() {
            history.push(high);
        }
        Ok(())
    }
}

impl Pwm for FakePin {
    fn set_duty(&mut self, duty: f64) -> Result<(), BusError> {
        if let Ok(mut duties) = self.duties.lock() {
            duties.push(duty);
        }
        Ok(())
    }
}

/// A file tree in memory.
#[derive(Debug, Clone, Default)]
pub struct MemFs {
    /// Files by absolute path.
    pub files: Arc<Mutex<BTreeMap<PathBuf, String>>>,
    /// Free and total bytes reported for any path.
    pub space: (u64, u64),
}

impl MemFs {
    /// An empty tree.
    pub fn new() -> MemFs {
        MemFs::default()
    }

    /// Writes (or replaces) a file.
    pub fn put(&self, path: &str, text: &str) {
        if let Ok(mut files) = self.files.lock() {
            files.insert(PathBuf::from(path), text.to_owned());
        }
    }

    /// Removes a file (a device unplugged).
    pub fn remove(&self, path: &str) {
        if let Ok(mut files) = self.files.lock() {
            files.remove(Path::new(path));
        }
    }
}

impl Files for MemFs {
    fn read(&self, path: &Path) -> Result<String, BusError> {
        let files = self.files.lock().map_err(|_| BusError::File {
            path: path.to_owned(),
            reason: "poisoned".to_owned(),
        })?;
        files.get(path).cloned().ok_or_else(|| BusError::File {
            path: path.to_owned(),
            reason: "No such file or directory (os error 2)".to_owned(),
        })
    }

    fn list(&self, path: &Path) -> Result<Vec<PathBuf>, BusError> {
        let files = self.files.lock().map_err(|_| BusError::File {
            path: path.to_owned(),
            reason: "poisoned".to_owned(),
        })?;
        let mut entries: Vec<PathBuf> = files
            .keys()
            .filter_map(|file| {
                let rest = file.strip_prefix(path).ok()?;
                let first = rest.components().next()?;
                Some(path.join(first))
            })
            .collect();
        entries.dedup();
        if entries.is_empty() {
            return Err(BusError::File {
                path: path.to_owned(),
                reason: "No such file or directory (os error 2)".to_owned(),
            });
        }
        Ok(entries)
    }

    fn disk_space(&self, _path: &Path) -> Result<(u64, u64), BusError> {
        Ok(self.space)
    }
}
