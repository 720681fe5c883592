//! GPIO: `gpio_in` (a contact, a PIR motion sensor: level and a debounced
//! count of rising edges), `gpio_out` (set, toggle, pulse with auto-off) and
//! `pwm` (duty cycle).
//!
//! `gpio_in` polls the pin at each read: a change counts once the new level
//! has held for `debounce`, so contact bounce and a single noisy sample are
//! ignored. Poll faster than the shortest event you care about (a PIR holds
//! its output for seconds; a door contact for as long as the door is open).

use crate::bus::{InputPin, OutputPin, Pwm};
use crate::{Actuator, ActuatorCommand, HalError, Sample, Sensor, Unit};
use std::time::{Duration, Instant};

/// A digital input.
#[derive(Debug)]
pub struct GpioIn<P> {
    pin: P,
    debounce: Duration,
    /// The accepted level.
    level: Option<bool>,
    /// A different level seen, and since when.
    candidate: Option<(bool, Instant)>,
    rising_edges: u64,
}

impl<P: InputPin> GpioIn<P> {
    /// `pin`, accepting a change after it held for `debounce`.
    pub fn new(pin: P, debounce: Duration) -> GpioIn<P> {
        GpioIn {
            pin,
            debounce,
            level: None,
            candidate: None,
            rising_edges: 0,
        }
    }

    /// A read at `now` (tests pass the time; [`Sensor::read`] passes now).
    pub fn read_at(&mut self, now: Instant) -> Result<Vec<Sample>, HalError> {
        let raw = self.pin.is_high()?;
        match self.level {
            None => self.level = Some(raw),
            Some(level) if raw == level => self.candidate = None,
            Some(_) => {
                let since = match self.candidate {
                    Some((candidate, since)) if candidate == raw => since,
                    _ => {
                        self.candidate = Some((raw, now));
                        now
                    }
                };
                if now.saturating_duration_since(since) >= self.debounce {
                    self.level = Some(raw);
                    self.candidate = None;
                    if raw {
                        self.rising_edges += 1;
                    }
                }
            }
        }
        let level = self.level.unwrap_or(raw);
        Ok(vec![
            Sample::new("level", if level { 1.0 } else { 0.0 }, Unit::None),
            Sample::new("count", self.rising_edges as f64, Unit::None),
        ])
    }
}

impl<P: InputPin> Sensor for GpioIn<P> {
    fn quantities(&self) -> &'static [&'static str] {
        &["level", "count"]
    }

    fn read(&mut self) -> Result<Vec<Sample>, HalError> {
        self.read_at(Instant::now())
    }
}

/// A digital output; `active_low` inverts it (relay boards often are).
#[derive(Debug)]
pub struct GpioOut<P> {
    pin: P,
    active_low: bool,
    on: bool,
    pulse_until: Option<Instant>,
}

impl<P: OutputPin> GpioOut<P> {
    /// `pin`, off at start.
    pub fn new(mut pin: P, active_low: bool) -> Result<GpioOut<P>, HalError> {
        pin.set_high(active_low)?;
        Ok(GpioOut {
            pin,
            active_low,
            on: false,
            pulse_until: None,
        })
    }

    fn drive(&mut self, on: bool) -> Result<(), HalError> {
        self.pin.set_high(on != self.active_low)?;
        self.on = on;
        Ok(())
    }

    /// Applies `command` at `now`.
    pub fn apply_at(&mut self, command: ActuatorCommand, now: Instant) -> Result<f64, HalError> {
        match command {
            ActuatorCommand::Set(on) => {
                self.pulse_until = None;
                self.drive(on)?;
            }
            ActuatorCommand::Toggle => {
                self.pulse_until = None;
                self.drive(!self.on)?;
            }
            ActuatorCommand::Pulse(length) => {
                self.drive(true)?;
                self.pulse_until = Some(now + length);
            }
            ActuatorCommand::Duty(_) => {
                return Err(HalError::Config(
                    "gpio_out takes set, toggle or pulse, not a duty cycle (use a pwm actuator)"
                        .to_owned(),
                ))
            }
        }
        Ok(if self.on { 1.0 } else { 0.0 })
    }
}

impl<P: OutputPin> Actuator for GpioOut<P> {
    fn apply(&mut self, command: ActuatorCommand) -> Result<f64, HalError> {
        self.apply_at(command, Instant::now())
    }

    fn tick(&mut self, now: Instant) -> Result<Option<f64>, HalError> {
        match self.pulse_until {
            Some(until) if now >= until => {
                self.pulse_until = None;
                self.drive(false)?;
                Ok(Some(0.0))
            }
            _ => Ok(None),
        }
    }
}

/// A PWM output.
#[derive(Debug)]
pub struct PwmOut<P> {
    pwm: P,
    duty: f64,
}

impl<P: Pwm> PwmOut<P> {
    /// `pwm` at duty 0.
    pub fn new(mut pwm: P) -> Result<PwmOut<P>, HalError> {
        pwm.set_duty(0.0)?;
        Ok(PwmOut { pwm, duty: 0.0 })
    }
}

impl<P: Pwm> Actuator for PwmOut<P> {
    fn apply(&mut self, command: ActuatorCommand) -> Result<f64, HalError> {
        let duty = match command {
            ActuatorCommand::Duty(duty) if (0.0..=1.0).contains(&duty) => duty,
            ActuatorCommand::Duty(duty) => {
                return Err(HalError::Config(format!(
                    "duty {duty} is not within 0.0 to 1.0"
                )))
            }
            ActuatorCommand::Set(on) => {
                if on {
                    1.0
                } else {
                    0.0
                }
            }
            ActuatorCommand::Toggle => {
                if self.duty > 0.0 {
                    0.0
                } else {
                    1.0
                }
            }
            ActuatorCommand::Pulse(_) => {
                return Err(HalError::Config(
                    "pwm takes a duty cycle, not a pulse".to_owned(),
                ))
            }
        };
        self.pwm.set_duty(duty)?;
        self.duty = duty;
        Ok(duty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakePin;

    fn level_and_count(samples: &[Sample]) -> (f64, f64) {
        (samples[0].value, samples[1].value)
    }

    #[test]
    fn bounces_shorter_than_debounce_are_ignored_and_edges_counted() {
        let pin = FakePin::new();
        let mut input = GpioIn::new(pin.clone(), Duration::from_millis(50));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(
            level_and_count(&input.read_at(at(0)).expect("reads")),
            (0.0, 0.0)
        );
        // A 20 ms bounce: ignored.
        pin.put(true);
        input.read_at(at(10)).expect("reads");
        pin.put(false);
        assert_eq!(
            level_and_count(&input.read_at(at(30)).expect("reads")),
            (0.0, 0.0)
        );
        // A real press: high for 60 ms.
        pin.put(true);
        input.read_at(at(100)).expect("reads");
        assert_eq!(
            level_and_count(&input.read_at(at(130)).expect("reads")),
            (0.0, 0.0)
        );
        assert_eq!(
            level_and_count(&input.read_at(at(160)).expect("reads")),
            (1.0, 1.0)
        );
        // Released, pressed again: two edges.
        pin.put(false);
        input.read_at(at(300)).expect("reads");
        input.read_at(at(400)).expect("reads");
        pin.put(true);
        input.read_at(at(500)).expect("reads");
        assert_eq!(
            level_and_count(&input.read_at(at(600)).expect("reads")),
            (1.0, 2.0)
        );
    }

    #[test]
    fn an_output_sets_toggles_and_pulses_with_auto_off() {
        let pin = FakePin::new();
        let mut relay = GpioOut::new(pin.clone(), true).expect("pin");
        // Active low: off is high.
        assert!(pin.get());
        let t0 = Instant::now();
        assert_eq!(
            relay.apply_at(ActuatorCommand::Set(true), t0).expect("set"),
            1.0
        );
        assert!(!pin.get());
        assert_eq!(
            relay.apply_at(ActuatorCommand::Toggle, t0).expect("toggle"),
            0.0
        );
        relay
            .apply_at(ActuatorCommand::Pulse(Duration::from_millis(500)), t0)
            .expect("pulse");
        assert!(!pin.get(), "on during the pulse");
        assert_eq!(
            relay.tick(t0 + Duration::from_millis(499)).expect("tick"),
            None
        );
        assert_eq!(
            relay.tick(t0 + Duration::from_millis(500)).expect("tick"),
            Some(0.0)
        );
        assert!(pin.get(), "off after it");
        assert!(relay.apply_at(ActuatorCommand::Duty(0.5), t0).is_err());
    }

    #[test]
    fn pwm_takes_duty_cycles_within_range() {
        let pin = FakePin::new();
        let mut fan = PwmOut::new(pin.clone()).expect("pwm");
        assert_eq!(fan.apply(ActuatorCommand::Duty(0.25)).expect("duty"), 0.25);
        assert_eq!(fan.apply(ActuatorCommand::Toggle).expect("toggle"), 0.0);
        assert!(fan.apply(ActuatorCommand::Duty(1.5)).is_err());
        assert_eq!(*pin.duties.lock().expect("lock"), vec![0.0, 0.25, 0.0]);
    }
}
