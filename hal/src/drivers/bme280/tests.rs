//! Unit tests of `bme280`: the BME280 driver against the datasheet and a fake bus.
use super::*;
use crate::fake::{FakeDevice, FakeI2c};

/// The BMP280 datasheet's worked example (section 3.12).
fn datasheet_calibration() -> Calibration {
    Calibration {
        t1: 27504,
        t2: 26435,
        t3: -1000,
        p1: 36477,
        p2: -10685,
        p3: 3024,
        p4: 2855,
        p5: 140,
        p6: -7,
        p7: 15500,
        p8: -14600,
        p9: 6000,
        ..Calibration::default()
    }
}

const ADC_T: i32 = 519_888;
const ADC_P: i32 = 415_148;

#[test]
fn the_datasheet_example_gives_25_08_degrees_and_100653_pascal() {
    let c = datasheet_calibration();
    let (t, t_fine) = c.temperature(ADC_T);
    assert!((t_fine - 128_422.287).abs() < 0.01, "t_fine {t_fine}");
    assert!((t - 25.08).abs() < 0.005, "{t}");
    let p = c.pressure(ADC_P, t_fine).expect("no division by zero");
    assert!((p - 100_653.27).abs() < 0.01, "{p}");
}

/// The datasheet's 32-bit integer humidity formula (BME280 4.2.3), to
/// cross-check the double one.
fn humidity_int(c: &Calibration, adc_h: i32, t_fine: i32) -> f64 {
    let mut v = t_fine - 76800;
    v = (((adc_h << 14) - (i32::from(c.h4) << 20) - (i32::from(c.h5) * v) + 16384) >> 15)
        * (((((((v * i32::from(c.h6)) >> 10) * (((v * i32::from(c.h3)) >> 11) + 32768)) >> 10)
            + 2_097_152)
            * i32::from(c.h2)
            + 8192)
            >> 14);
    v -= ((((v >> 15) * (v >> 15)) >> 7) * i32::from(c.h1)) >> 4;
    v = v.clamp(0, 419_430_400);
    f64::from(v >> 12) / 1024.0
}

fn humidity_calibration() -> Calibration {
    // Registers as a real BME280 holds them: 0xa1 = 75; 0xe1.. = 0x6a 0x01
    // 0x00 0x13 0x2a 0x03 0x1e.
    datasheet_calibration().with_humidity(75, &[0x6a, 0x01, 0x00, 0x13, 0x2a, 0x03, 0x1e])
}

#[test]
fn humidity_calibration_bytes_are_unpacked_as_the_datasheet_says() {
    let c = humidity_calibration();
    assert_eq!((c.h1, c.h2, c.h3, c.h6), (75, 362, 0, 30));
    assert_eq!(c.h4, (0x13 << 4) | 0x0a);
    assert_eq!(c.h5, (0x03 << 4) | 0x02);
}

#[test]
fn humidity_agrees_with_the_datasheet_integer_formula() {
    let c = humidity_calibration();
    let (_, t_fine) = c.temperature(ADC_T);
    for adc_h in [20_000, 25_000, 27_000, 30_000, 35_000] {
        let double = c.humidity(adc_h, t_fine);
        let int = humidity_int(&c, adc_h, t_fine as i32);
        assert!((double - int).abs() < 0.1, "adc {adc_h}: {double} vs {int}");
        assert!((0.0..=100.0).contains(&double));
    }
}

fn raw20(value: i32) -> [u8; 3] {
    [
        (value >> 12) as u8,
        (value >> 4) as u8,
        ((value & 0xf) << 4) as u8,
    ]
}

/// A BME280 on the fake bus holding the datasheet calibration and the
/// example raw readings.
fn fake_bme280(bus: &FakeI2c, address: u8, chip_id: u8) {
    let c = datasheet_calibration();
    let mut device = FakeDevice::registers();
    device.set(REG_ID, &[chip_id]);
    let mut tp = Vec::new();
    for v in [
        c.t1 as i32,
        c.t2.into(),
        c.t3.into(),
        c.p1 as i32,
        c.p2.into(),
        c.p3.into(),
        c.p4.into(),
        c.p5.into(),
        c.p6.into(),
        c.p7.into(),
        c.p8.into(),
        c.p9.into(),
    ] {
        tp.extend_from_slice(&(v as u16).to_le_bytes());
    }
    device.set(REG_CALIB_TP, &tp);
    device.set(REG_CALIB_H1, &[75]);
    device.set(REG_CALIB_H2, &[0x6a, 0x01, 0x00, 0x13, 0x2a, 0x03, 0x1e]);
    let mut data = Vec::new();
    data.extend_from_slice(&raw20(ADC_P));
    data.extend_from_slice(&raw20(ADC_T));
    data.extend_from_slice(&27_000u16.to_be_bytes());
    device.set(REG_DATA, &data);
    bus.attach(address, device);
}

#[test]
fn a_forced_measurement_over_the_bus_gives_all_three_quantities() {
    let bus = FakeI2c::new();
    fake_bme280(&bus, 0x76, 0x60);
    let mut sensor = Bme280::new(bus.clone(), 0x76, Chip::Bme280);
    let samples = sensor.read().expect("reads");
    let names: Vec<&str> = samples.iter().map(|s| s.quantity).collect();
    assert_eq!(names, ["temperature", "humidity", "pressure"]);
    assert!((samples[0].value - 25.08).abs() < 0.005);
    assert!((samples[2].value - 1006.5327).abs() < 0.0001);
    assert_eq!(samples[2].unit.symbol(), "hPa");
    let writes = bus.with(0x76, |d| d.writes.clone()).expect("device");
    assert!(writes.contains(&vec![REG_CTRL_HUM, CTRL_HUM_X1]));
    assert!(writes.contains(&vec![REG_CTRL_MEAS, CTRL_MEAS_FORCED]));
    // The humidity control is written before the measurement starts.
    let hum = writes.iter().position(|w| w[0] == REG_CTRL_HUM);
    let meas = writes.iter().position(|w| w[0] == REG_CTRL_MEAS);
    assert!(hum < meas);
}

#[test]
fn a_bmp280_gives_no_humidity() {
    let bus = FakeI2c::new();
    fake_bme280(&bus, 0x77, 0x58);
    let mut sensor = Bme280::new(bus, 0x77, Chip::Bmp280);
    let samples = sensor.read().expect("reads");
    let names: Vec<&str> = samples.iter().map(|s| s.quantity).collect();
    assert_eq!(names, ["temperature", "pressure"]);
}

#[test]
fn a_wrong_chip_id_is_named_with_a_hint() {
    let bus = FakeI2c::new();
    fake_bme280(&bus, 0x76, 0x58);
    let mut sensor = Bme280::new(bus, 0x76, Chip::Bme280);
    let error = sensor.read().expect_err("a BMP280 is not a BME280");
    assert!(
        error.to_string().contains("use driver = \"bmp280\""),
        "{error}"
    );
}

#[test]
fn a_missing_device_is_a_nack() {
    let mut sensor = Bme280::new(FakeI2c::new(), 0x76, Chip::Bme280);
    assert_eq!(sensor.read(), Err(HalError::Bus(BusError::Nack(0x76))));
}

#[test]
fn garbage_blank_calibration_and_skipped_readings_are_errors() {
    let bus = FakeI2c::new();
    fake_bme280(&bus, 0x76, 0x60);
    // A skipped measurement.
    bus.with(0x76, |d| d.set(REG_DATA + 3, &raw20(SKIPPED_20BIT)));
    let mut sensor = Bme280::new(bus.clone(), 0x76, Chip::Bme280);
    assert!(matches!(sensor.read(), Err(HalError::Device(m)) if m.contains("skipped")));
    // All ones: an impossible reading.
    bus.with(0x76, |d| d.set(REG_DATA, &[0xff; 8]));
    assert!(matches!(sensor.read(), Err(HalError::Device(m)) if m.contains("impossible")));
    // A blank calibration.
    bus.with(0x76, |d| d.set(REG_CALIB_TP, &[0; 24]));
    let mut fresh = Bme280::new(bus, 0x76, Chip::Bme280);
    assert!(matches!(fresh.read(), Err(HalError::Device(m)) if m.contains("blank")));
}

#[test]
fn a_chip_unplugged_and_plugged_back_recovers_by_itself() {
    let bus = FakeI2c::new();
    fake_bme280(&bus, 0x76, 0x60);
    let mut sensor = Bme280::new(bus.clone(), 0x76, Chip::Bme280);
    assert!(sensor.read().is_ok());
    let device = bus.detach(0x76).expect("attached");
    assert_eq!(sensor.read(), Err(HalError::Bus(BusError::Nack(0x76))));
    bus.attach(0x76, device);
    assert!(sensor.read().is_ok());
}
