//! A simulated sensor: deterministic waveforms from a seed.
//!
//! `SimSensor::sample(t)` is a pure function of the configuration and `t`, so
//! two agents (or two runs) with the same seed read the same values.

use std::time::Duration;

/// The shape of a simulated signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Waveform {
    /// A sine between `min` and `max` over `period`, with a little seeded noise.
    Sine,
    /// A bounded random walk between `min` and `max`, one step per `period / 64`.
    Walk,
    /// Alternates between `min` and `max` every half `period`.
    Step,
    /// Always `value`.
    Constant(f64),
}

/// Why a simulated sensor could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// `min` was not below `max`, or one of them was not finite.
    #[error("simulated sensor needs finite min < max (got min {min}, max {max})")]
    BadRange {
        /// The configured lower bound.
        min: f64,
        /// The configured upper bound.
        max: f64,
    },
    /// A zero period would divide by zero.
    #[error("simulated sensor needs a period above zero")]
    ZeroPeriod,
}

/// A deterministic simulated sensor.
#[derive(Debug, Clone)]
pub struct SimSensor {
    waveform: Waveform,
    min: f64,
    max: f64,
    period: Duration,
    seed: u64,
}

impl SimSensor {
    /// Builds a sensor; `min < max` and a non-zero `period` are required.
    pub fn new(
        waveform: Waveform,
        min: f64,
        max: f64,
        period: Duration,
        seed: u64,
    ) -> Result<Self, SimError> {
        if !(min.is_finite() && max.is_finite() && min < max) {
            return Err(SimError::BadRange { min, max });
        }
        if period.is_zero() {
            return Err(SimError::ZeroPeriod);
        }
        Ok(SimSensor {
            waveform,
            min,
            max,
            period,
            seed,
        })
    }

    /// The reading at `t` since the sensor's start. Always within `[min, max]`
    /// (or exactly the constant).
    pub fn sample(&self, t: Duration) -> f64 {
        let t_ms = t.as_millis() as u64;
        let period_ms = self.period.as_millis().max(1) as u64;
        let span = self.max - self.min;
        let value = match self.waveform {
            Waveform::Constant(value) => return value,
            Waveform::Sine => {
                let phase = (t_ms % period_ms) as f64 / period_ms as f64;
                let base = 0.5 + 0.5 * sine_of_turns(phase);
                let noise = (unit_noise(self.seed, t_ms / 1000) - 0.5) * 0.02;
                self.min + span * (base + noise)
            }
            Waveform::Walk => {
                let step_ms = (period_ms / 64).max(1);
                let steps = t_ms / step_ms;
                // Walks are replayed from the start so `sample` stays pure; the
                // cost is bounded by walking at most 4096 steps (older history
                // folds into the seed of the window).
                let first = steps.saturating_sub(4096);
                let mut position = unit_noise(self.seed, first);
                for step in first..steps {
                    position += (unit_noise(self.seed ^ 0x5eed, step) - 0.5) * 0.1;
                    position = position.clamp(0.0, 1.0);
                }
                self.min + span * position
            }
            Waveform::Step => {
                if (t_ms % period_ms) < period_ms / 2 {
                    self.min
                } else {
                    self.max
                }
            }
        };
        value.clamp(self.min, self.max)
    }
}

/// A simulated device for the agent's sampling loop: a [`SimSensor`] read
/// against the time since it was built, that fails now and then when
/// `flaky` (a probability per read) is above zero.
#[derive(Debug, Clone)]
pub struct SimDevice {
    sensor: SimSensor,
    started: std::time::Instant,
    flaky: f64,
    reads: u64,
}

impl SimDevice {
    /// `sensor`, failing a share `flaky` (0.0 to 1.0) of its reads.
    pub fn new(sensor: SimSensor, flaky: f64) -> SimDevice {
        SimDevice {
            sensor,
            started: std::time::Instant::now(),
            flaky: flaky.clamp(0.0, 1.0),
            reads: 0,
        }
    }

    /// The read number `n` (from 0) fails: deterministic from the seed.
    pub fn fails(&self, n: u64) -> bool {
        self.flaky > 0.0 && unit_noise(self.sensor.seed ^ 0xf1a4, n) < self.flaky
    }
}

impl crate::Sensor for SimDevice {
    fn quantities(&self) -> &'static [&'static str] {
        &["value"]
    }

    fn read(&mut self) -> Result<Vec<crate::Sample>, crate::HalError> {
        let n = self.reads;
        self.reads += 1;
        if self.fails(n) {
            return Err(crate::HalError::Device(format!(
                "simulated failure (flaky = {})",
                self.flaky
            )));
        }
        let value = self.sensor.sample(self.started.elapsed());
        Ok(vec![crate::Sample::new(
            "value",
            (value * 100.0).round() / 100.0,
            crate::Unit::None,
        )])
    }
}

/// A simulated actuator: remembers its state, never fails.
#[derive(Debug, Clone, Default)]
pub struct SimActuator {
    state: f64,
    pulse_until: Option<std::time::Instant>,
}

impl crate::Actuator for SimActuator {
    fn apply(&mut self, command: crate::ActuatorCommand) -> Result<f64, crate::HalError> {
        use crate::ActuatorCommand as C;
        self.state = match command {
            C::Set(on) => f64::from(u8::from(on)),
            C::Toggle => f64::from(u8::from(self.state == 0.0)),
            C::Pulse(length) => {
                self.pulse_until = Some(std::time::Instant::now() + length);
                1.0
            }
            C::Duty(duty) if (0.0..=1.0).contains(&duty) => duty,
            C::Duty(duty) => {
                return Err(crate::HalError::Config(format!(
                    "duty {duty} is not within 0.0 to 1.0"
                )))
            }
        };
        Ok(self.state)
    }

    fn tick(&mut self, now: std::time::Instant) -> Result<Option<f64>, crate::HalError> {
        match self.pulse_until {
            Some(until) if now >= until => {
                self.pulse_until = None;
                self.state = 0.0;
                Ok(Some(0.0))
            }
            _ => Ok(None),
        }
    }
}

/// A value in `[0, 1)` from a seed and a counter (SplitMix64 finaliser).
/// `sin(2π · turns)` for `turns` in `[0, 1)`, within 1e-9 of the library's.
///
/// The simulator's sine is the only call the whole binary made into libm, so
/// computing it here keeps libm out of the process: on glibc that is one
/// shared library less to load and map (about 330 kB of resident pages).
fn sine_of_turns(turns: f64) -> f64 {
    // Fold into the first quarter turn: the second half mirrors the first
    // with the sign flipped, and each half is symmetric about its middle.
    let (turns, sign) = if turns >= 0.5 {
        (turns - 0.5, -1.0)
    } else {
        (turns, 1.0)
    };
    let turns = if turns > 0.25 { 0.5 - turns } else { turns };
    let x = turns * std::f64::consts::TAU;
    let x2 = x * x;
    // Taylor to x^13 in Horner form, innermost factor first (each divisor
    // is the ratio of two neighbouring odd factorials): at x = π/2 the first
    // term left out is below 7e-10.
    let mut series = 1.0;
    for divisor in [156.0, 110.0, 72.0, 42.0, 20.0, 6.0] {
        series = 1.0 - x2 / divisor * series;
    }
    let series = x * series;
    sign * series.clamp(0.0, 1.0)
}

fn unit_noise(seed: u64, counter: u64) -> f64 {
    let mut z = seed
        .wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(waveform: Waveform, seed: u64) -> SimSensor {
        SimSensor::new(waveform, 15.0, 25.0, Duration::from_secs(600), seed).expect("valid")
    }

    #[test]
    fn the_sine_agrees_with_the_library() {
        let mut worst = 0.0f64;
        for k in 0..100_000 {
            let turns = k as f64 / 100_000.0;
            let error = (sine_of_turns(turns) - (turns * std::f64::consts::TAU).sin()).abs();
            worst = worst.max(error);
        }
        assert!(worst < 1e-9, "largest error {worst}");
        assert_eq!(sine_of_turns(0.0), 0.0);
        assert!((sine_of_turns(0.25) - 1.0).abs() < 1e-9);
        assert!((sine_of_turns(0.75) + 1.0).abs() < 1e-9);
        assert!((sine_of_turns(0.999_999_9)).abs() < 1e-6);
    }

    #[test]
    fn same_seed_same_readings() {
        for waveform in [Waveform::Sine, Waveform::Walk, Waveform::Step] {
            let a = sensor(waveform, 7);
            let b = sensor(waveform, 7);
            for s in (0..3600).step_by(37) {
                let t = Duration::from_secs(s);
                assert_eq!(a.sample(t), b.sample(t));
            }
        }
    }

    #[test]
    fn readings_stay_in_range() {
        for waveform in [Waveform::Sine, Waveform::Walk, Waveform::Step] {
            let s = sensor(waveform, 3);
            for secs in 0..2000 {
                let v = s.sample(Duration::from_secs(secs));
                assert!((15.0..=25.0).contains(&v), "{waveform:?} gave {v}");
            }
        }
    }

    #[test]
    fn different_seeds_differ() {
        let a = sensor(Waveform::Walk, 1);
        let b = sensor(Waveform::Walk, 2);
        let t = Duration::from_secs(100);
        assert_ne!(a.sample(t), b.sample(t));
    }

    #[test]
    fn sine_moves_over_a_period() {
        let s = sensor(Waveform::Sine, 0);
        let quarter = s.sample(Duration::from_secs(150));
        let three_quarters = s.sample(Duration::from_secs(450));
        assert!(quarter > 24.0 && three_quarters < 16.0);
    }

    #[test]
    fn constant_and_step() {
        assert_eq!(
            sensor(Waveform::Constant(30.0), 0).sample(Duration::ZERO),
            30.0
        );
        let step = sensor(Waveform::Step, 0);
        assert_eq!(step.sample(Duration::from_secs(10)), 15.0);
        assert_eq!(step.sample(Duration::from_secs(310)), 25.0);
    }

    #[test]
    fn a_flaky_device_fails_the_configured_share_of_reads_deterministically() {
        use crate::Sensor;
        let device = SimDevice::new(sensor(Waveform::Sine, 9), 0.3);
        let failures = (0..1000).filter(|&n| device.fails(n)).count();
        assert!((250..350).contains(&failures), "{failures}");
        let again = SimDevice::new(sensor(Waveform::Sine, 9), 0.3);
        assert!((0..1000).all(|n| device.fails(n) == again.fails(n)));
        let mut steady = SimDevice::new(sensor(Waveform::Sine, 9), 0.0);
        assert!((0..100).all(|_| steady.read().is_ok()));
    }

    #[test]
    fn a_simulated_actuator_keeps_its_state_and_ends_pulses() {
        use crate::{Actuator, ActuatorCommand};
        let mut fan = SimActuator::default();
        assert_eq!(fan.apply(ActuatorCommand::Set(true)), Ok(1.0));
        assert_eq!(fan.apply(ActuatorCommand::Toggle), Ok(0.0));
        assert_eq!(fan.apply(ActuatorCommand::Pulse(Duration::ZERO)), Ok(1.0));
        assert_eq!(
            fan.tick(std::time::Instant::now() + Duration::from_millis(1)),
            Ok(Some(0.0))
        );
        assert!(fan.apply(ActuatorCommand::Duty(2.0)).is_err());
    }

    #[test]
    fn bad_configurations_are_errors() {
        assert!(SimSensor::new(Waveform::Sine, 5.0, 5.0, Duration::from_secs(1), 0).is_err());
        assert!(SimSensor::new(Waveform::Sine, f64::NAN, 5.0, Duration::from_secs(1), 0).is_err());
        assert_eq!(
            SimSensor::new(Waveform::Sine, 0.0, 5.0, Duration::ZERO, 0).err(),
            Some(SimError::ZeroPeriod)
        );
    }
}
