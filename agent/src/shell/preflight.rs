//! What `shoal run` needs before its first frame, checked without creating
//! or changing anything: [`problems`]. `Agent::start` calls it first and
//! refuses to start on the first problem; `shoal check` calls it after the
//! file parsed and prints them all. One function, so a configuration that
//! `check` passes is one that `run` starts with (and a service under
//! `Restart=on-failure` does not crash-loop on what `check` could have
//! said), in the same words.
//!
//! Checked: the state directory can be used (or made), an identity in it
//! can be read, the node has a usable name, the core takes the timings and
//! limits, the mesh key is valid (or, missing, can be created where run
//! creates it), the API token file likewise, and every `command`
//! executor's program exists and is executable (a bare name on `$PATH`).
//! Not checked: the sockets (binding them is starting the agent), static
//! peers' names (resolving them is network traffic, and run starts
//! without them), sensors and actuators (run starts without a failing
//! one, and says so).
//!
//! The checks run as whoever runs them: `shoal check` as root passes a
//! state directory the service's own user could not write.

use super::agent::{self, RunError};
use super::executor;
use super::state;
use shoal_config::{Action, Config};
use shoal_core::wire::NodeId;

/// Every problem that would stop `shoal run` with `config` before its
/// first frame, in the order run meets them; empty when it would start
/// (sockets aside).
pub fn problems(config: &Config) -> Vec<RunError> {
    let mut problems = Vec::new();
    let state_dir = &config.state.dir;
    let state_dir_usable = match state::check_dir(state_dir) {
        // Nothing in a directory that is not there yet.
        Ok(()) if state_dir.is_dir() => {
            if let Err(error) = state::check_identity(state_dir) {
                problems.push(error.into());
            }
            true
        }
        Ok(()) => true,
        Err(error) => {
            problems.push(error.into());
            false
        }
    };
    // A file in an unusable state directory has that problem, said once.
    let in_usable_place = |path: &std::path::Path| state_dir_usable || !path.starts_with(state_dir);
    // The name's validity does not depend on the id (only the suffix of a
    // distribution's default hostname does).
    if let Err(error) = agent::node_name(config, NodeId(0)) {
        problems.push(error);
    }
    if let Err(error) = shoal_core::Config::from(config).validate() {
        problems.push(error.into());
    }
    if let Some(key) = config.key_path().filter(|key| in_usable_place(key)) {
        if let Err(error) = state::check_key(&key, state_dir) {
            problems.push(error.into());
        }
    }
    let token = &config.api.token_file;
    if in_usable_place(token) {
        if let Err(error) = state::check_token(token, state_dir) {
            problems.push(error.into());
        }
    }
    if let Some(path) = config.mqtt.as_ref().and_then(|m| m.password_file.as_ref()) {
        if let Err(error) = super::mqtt::read_password(path) {
            problems.push(RunError::Mqtt(error));
        }
    }
    for section in &config.sensors {
        let reason = match (
            section.driver.as_str(),
            section.settings.get("password_file"),
        ) {
            ("command", _) => {
                executor::find_program(section.argv.first().map_or("", String::as_str)).err()
            }
            ("http", Some(shoal_config::Setting::Text(path))) => {
                super::files::read_first_line(std::path::Path::new(path), "password_file").err()
            }
            _ => None,
        };
        if let Some(reason) = reason {
            problems.push(RunError::Sensor {
                name: section.name.clone(),
                reason,
            });
        }
    }
    for section in &config.exports {
        if let Err(reason) = super::export::check(section) {
            problems.push(RunError::Export {
                url: section.url_text.clone(),
                reason,
            });
        }
    }
    for section in &config.executors {
        if let Action::Command(argv) = &section.action {
            let program = argv.first().map_or("", String::as_str);
            if let Err(reason) = executor::find_program(program) {
                problems.push(RunError::Executor {
                    name: section.name.clone(),
                    reason,
                });
            }
        }
    }
    problems
}
