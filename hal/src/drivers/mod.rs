//! The device drivers. Each checks what its datasheet lets it check (chip
//! id, CRC, calibration, "measurement skipped" values) and turns a bus
//! failure into an error, never a panic or a made-up value.

pub mod ads1115;
pub mod bh1750;
pub mod bme280;
pub mod ds18b20;
pub mod gpio;
pub mod sht3x;
pub mod system;

/// Addresses each I2C driver may use (for `shoal probe` and config checks).
pub const I2C_ADDRESSES: &[(&str, &[u8])] = &[
    ("bme280", &[0x76, 0x77]),
    ("bmp280", &[0x76, 0x77]),
    ("sht3x", &[0x44, 0x45]),
    ("bh1750", &[0x23, 0x5c]),
    ("ads1115", &[0x48, 0x49, 0x4a, 0x4b]),
];

/// Quantities each driver can give (a `quantities` setting picks some).
pub const QUANTITIES: &[(&str, &[&str])] = &[
    ("bme280", &["temperature", "humidity", "pressure"]),
    ("bmp280", &["temperature", "pressure"]),
    ("sht3x", &["temperature", "humidity"]),
    ("bh1750", &["lux"]),
    ("ads1115", &["a0", "a1", "a2", "a3"]),
    ("ds18b20", &["temperature"]),
    ("soc_temp", &["temperature"]),
    ("system", &["load1", "memory_used", "uptime", "disk_free"]),
    ("gpio_in", &["level", "count"]),
    ("sim", &["value"]),
];
