//! Unit tests of `executor`: executors: commands, timeouts, webhooks, actuators.
use super::*;
use shoal_config::ActuatorAction;

fn section(
    name: &str,
    argv: &[&str],
    remote: bool,
    timeout_ms: u64,
    policy: Policy,
) -> ExecutorSection {
    ExecutorSection {
        name: name.to_owned(),
        action: Action::Command(argv.iter().map(|s| (*s).to_owned()).collect()),
        remote,
        mqtt: false,
        timeout: Duration::from_millis(timeout_ms),
        policy,
    }
}

fn local() -> Caller {
    Caller {
        node: "here".to_owned(),
        local: true,
        inputs: String::new(),
    }
}

fn remote_caller() -> Caller {
    Caller {
        node: "far-away".to_owned(),
        local: false,
        inputs: "a/x=1".to_owned(),
    }
}

#[test]
fn a_command_that_succeeds_returns_its_output_and_sees_its_environment() {
    let executors = Executors::new(
        &[section(
            "hello",
            &[
                "/bin/sh",
                "-c",
                "echo \"$SHOAL_EXECUTOR on $SHOAL_NODE for $SHOAL_CALLER ($SHOAL_INPUTS)\"; echo warn >&2",
            ],
            true,
            5000,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("hello", &remote_caller()));
    assert_eq!(done.outcome, Outcome::Exited(0));
    assert_eq!(done.output, "hello on pi-1 for far-away (a/x=1)\nwarn\n");
}

#[test]
fn a_non_zero_exit_is_reported_with_its_code() {
    let executors = Executors::new(
        &[section(
            "fail",
            &["/bin/sh", "-c", "exit 3"],
            false,
            5000,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("fail", &local()));
    assert_eq!(done.outcome, Outcome::Exited(3));
}

#[test]
fn a_command_killed_by_a_signal_fails_and_says_which() {
    let executors = Executors::new(
        &[section(
            "doomed",
            &["/bin/sh", "-c", "kill -9 $$"],
            false,
            5000,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("doomed", &local()));
    assert_eq!(done.outcome, Outcome::Failed);
    assert!(
        done.output.contains("/bin/sh was killed by signal 9"),
        "{}",
        done.output
    );
}

#[test]
fn a_missing_program_is_a_failure_with_a_reason() {
    let executors = Executors::new(
        &[section(
            "ghost",
            &["/nonexistent/program"],
            false,
            5000,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("ghost", &local()));
    assert_eq!(done.outcome, Outcome::Failed);
    assert!(
        done.output.contains("cannot start /nonexistent/program"),
        "{}",
        done.output
    );
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = std::env::temp_dir().join(format!("shoal-exec-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let pidfile = dir.join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    let executors = Executors::new(
        &[section(
            "hang",
            &["/bin/sh", "-c", &script],
            false,
            300,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("hang", &local()));
    assert_eq!(done.outcome, Outcome::TimedOut);
    assert!(
        done.duration < Duration::from_secs(5),
        "{:?}",
        done.duration
    );
    let pid = std::fs::read_to_string(&pidfile).expect("pid written");
    let proc_dir = format!("/proc/{}", pid.trim());
    // The grandchild is gone (or a zombie being reaped by init) within a moment.
    let gone = (0..50).any(|_| {
        let alive = std::fs::read_to_string(format!("{proc_dir}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "));
        if alive {
            std::thread::sleep(Duration::from_millis(20));
        }
        !alive
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert!(gone, "the background sleep {} survived", pid.trim());
}

#[test]
fn huge_output_is_cut_and_the_command_is_not_blocked_by_it() {
    let executors = Executors::new(
        &[section(
            "loud",
            &["/bin/sh", "-c", "head -c 2000000 /dev/zero | tr '\\\\0' x; head -c 2000000 /dev/zero | tr '\\\\0' y >&2"],
            false,
            10_000,
            Policy::Refuse,
        )],
        "pi-1",
    );
    let done = smol::block_on(executors.run("loud", &local()));
    assert_eq!(done.outcome, Outcome::Exited(0));
    assert_eq!(done.output.len(), 2 * MAX_CAPTURE);
    assert!(summary(&done.output).len() <= wire::MAX_OUTPUT);
}

#[test]
fn refusals_unknown_not_remote_and_busy() {
    let executors = Executors::new(
        &[
            section("private", &["/bin/true"], false, 5000, Policy::Refuse),
            section("slow", &["/bin/sleep", "1"], true, 5000, Policy::Refuse),
            section("queued", &["/bin/sleep", "0.2"], true, 5000, Policy::Queue),
        ],
        "pi-1",
    );
    assert_eq!(
        executors.check("nope", &local()),
        Err(Outcome::UnknownExecutor)
    );
    assert_eq!(
        executors.check("private", &remote_caller()),
        Err(Outcome::NotRemote)
    );
    assert_eq!(executors.check("private", &local()), Ok(()));
    let me = local();
    smol::block_on(async {
        let first = executors.run("slow", &me);
        let second = async {
            smol::Timer::after(Duration::from_millis(100)).await;
            executors.run("slow", &local()).await
        };
        let (first, second) = future::zip(first, second).await;
        assert_eq!(first.outcome, Outcome::Exited(0));
        assert_eq!(second.outcome, Outcome::Busy);
        // With the queue policy the second waits and runs.
        let first = executors.run("queued", &me);
        let second = async {
            smol::Timer::after(Duration::from_millis(50)).await;
            executors.run("queued", &local()).await
        };
        let (first, second) = future::zip(first, second).await;
        assert_eq!(first.outcome, Outcome::Exited(0));
        assert_eq!(second.outcome, Outcome::Exited(0));
        assert!(
            second.duration >= Duration::from_millis(250),
            "{:?}",
            second.duration
        );
    });
}

#[test]
fn an_actuator_executor_switches_its_actuator() {
    let sections = [
        ExecutorSection {
            name: "fan_on".to_owned(),
            action: Action::Actuator {
                actuator: "fan".to_owned(),
                command: ActuatorAction::Set(true),
            },
            remote: true,
            mqtt: false,
            timeout: Duration::from_secs(1),
            policy: Policy::Refuse,
        },
        ExecutorSection {
            name: "pump_on".to_owned(),
            action: Action::Actuator {
                actuator: "pump".to_owned(),
                command: ActuatorAction::Pulse(Duration::from_millis(50)),
            },
            remote: true,
            mqtt: false,
            timeout: Duration::from_secs(1),
            policy: Policy::Refuse,
        },
    ];
    let pin = shoal_hal::fake::FakePin::new();
    let mut actuators: BTreeMap<String, Box<dyn Actuator>> = BTreeMap::new();
    actuators.insert(
        "fan".to_owned(),
        Box::new(shoal_hal::drivers::gpio::GpioOut::new(pin.clone(), false).expect("pin")),
    );
    let executors = Executors::new(&sections, "pi-1").with_actuators(actuators);
    let done = smol::block_on(executors.run("fan_on", &remote_caller()));
    assert_eq!(done.outcome, Outcome::Exited(0));
    assert_eq!(done.output, "fan: on\n");
    assert!(pin.get());
    let missing = smol::block_on(executors.run("pump_on", &local()));
    assert_eq!(missing.outcome, Outcome::Failed);
    assert!(
        missing.output.contains("not available"),
        "{}",
        missing.output
    );
}

/// A one-shot HTTP server on loopback answering `status`; returns its URL
/// and the request it got.
fn one_shot_server(
    status: &'static str,
    delay: Duration,
) -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/hook/lights",
        listener.local_addr().expect("addr")
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let mut request = Vec::new();
            while let Ok(n) = stream.read(&mut buf) {
                request.extend_from_slice(&buf[..n]);
                if n == 0 || request.windows(1).any(|w| w == b"}") {
                    break;
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
            std::thread::sleep(delay);
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, rx)
}

#[test]
fn a_webhook_posts_json_and_reports_the_status() {
    let (url, request) = one_shot_server("200 OK", Duration::ZERO);
    let (outcome, output) = smol::block_on(webhook(&url, "{\"a\":1}", Duration::from_secs(5)));
    assert_eq!(outcome, Outcome::Exited(0), "{output}");
    assert_eq!(output, "HTTP/1.1 200 OK\n");
    let request = request
        .recv_timeout(Duration::from_secs(2))
        .expect("request seen");
    assert!(
        request.starts_with("POST /hook/lights HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("Content-Type: application/json\r\n"));
    assert!(request.ends_with("{\"a\":1}"));

    let (url, _) = one_shot_server("500 Internal Server Error", Duration::ZERO);
    let (outcome, output) = smol::block_on(webhook(&url, "{}", Duration::from_secs(5)));
    assert_eq!(outcome, Outcome::Failed);
    assert!(output.contains("500 Internal Server Error"), "{output}");
}

#[test]
fn a_webhook_that_hangs_times_out_and_one_nobody_serves_fails() {
    let (url, _) = one_shot_server("200 OK", Duration::from_secs(3));
    let (outcome, output) = smol::block_on(webhook(&url, "{}", Duration::from_millis(300)));
    assert_eq!(outcome, Outcome::TimedOut, "{output}");
    let (outcome, output) = smol::block_on(webhook(
        "http://127.0.0.1:9/x",
        "{}",
        Duration::from_secs(2),
    ));
    assert_eq!(outcome, Outcome::Failed);
    assert!(output.contains("refused"), "{output}");
    let (outcome, output) = smol::block_on(webhook(
        "https://example.com/x",
        "{}",
        Duration::from_secs(2),
    ));
    assert_eq!(outcome, Outcome::Failed);
    assert!(output.contains("https:// is not supported"), "{output}");
}

#[test]
fn a_publish_executor_hands_its_point_to_the_agent() {
    let executors = Executors::new(
        &[ExecutorSection {
            name: "away".to_owned(),
            action: Action::Publish {
                point: "mode".to_owned(),
                value: 2.0,
            },
            remote: false,
            mqtt: false,
            timeout: Duration::from_secs(1),
            policy: Policy::Refuse,
        }],
        "pi-1",
    );
    let done = smol::block_on(executors.run("away", &local()));
    assert_eq!(done.outcome, Outcome::Exited(0));
    assert_eq!(done.publish, Some(("mode".to_owned(), 2.0)));
}

#[test]
fn toggle_pulse_and_duty_actions() {
    let action = |name: &str, command: ActuatorAction, actuator: &str| ExecutorSection {
        name: name.to_owned(),
        action: Action::Actuator {
            actuator: actuator.to_owned(),
            command,
        },
        remote: false,
        mqtt: false,
        timeout: Duration::from_secs(5),
        policy: Policy::Refuse,
    };
    let sections = [
        action("flip", ActuatorAction::Toggle, "light"),
        action(
            "bell",
            ActuatorAction::Pulse(Duration::from_millis(100)),
            "light",
        ),
        action("half", ActuatorAction::Duty(0.5), "fan"),
    ];
    let light = shoal_hal::fake::FakePin::new();
    let fan = shoal_hal::fake::FakePin::new();
    let mut actuators: BTreeMap<String, Box<dyn Actuator>> = BTreeMap::new();
    actuators.insert(
        "light".to_owned(),
        Box::new(shoal_hal::drivers::gpio::GpioOut::new(light.clone(), false).expect("pin")),
    );
    actuators.insert(
        "fan".to_owned(),
        Box::new(shoal_hal::drivers::gpio::PwmOut::new(fan.clone()).expect("pwm")),
    );
    let executors = Executors::new(&sections, "pi-1").with_actuators(actuators);
    let me = local();
    let flipped = smol::block_on(executors.run("flip", &me));
    assert_eq!(
        (flipped.outcome, flipped.output.as_str()),
        (Outcome::Exited(0), "light: on\n")
    );
    assert!(light.get());
    let rang = smol::block_on(executors.run("bell", &me));
    assert_eq!(rang.outcome, Outcome::Exited(0));
    assert!(rang.duration >= Duration::from_millis(100));
    assert!(!light.get(), "off after the pulse");
    assert_eq!(
        *light.history.lock().expect("lock"),
        vec![false, true, true, false]
    );
    let half = smol::block_on(executors.run("half", &me));
    assert_eq!(half.output, "fan: duty 0.5\n");
}

#[test]
fn a_run_under_way_ends_normally_after_a_reload_removes_its_executor() {
    let slow = section("slow", &["/bin/sleep", "0.3"], false, 5000, Policy::Refuse);
    let kept = section("kept", &["/bin/true"], false, 5000, Policy::Refuse);
    let mut executors = Executors::new(&[slow, kept.clone()], "pi-1");
    // As `Runs::start` does: the run gets its own copy.
    let under_way = executors.clone();
    let me = local();
    smol::block_on(async {
        let run = under_way.run("slow", &me);
        let reload = async {
            smol::Timer::after(Duration::from_millis(100)).await;
            let changed = section("slow", &["/bin/false"], false, 5000, Policy::Refuse);
            executors.reload(&[changed, kept.clone()]);
            let busy = executors.check("slow", &local());
            executors.reload(std::slice::from_ref(&kept));
            (busy, executors.check("slow", &local()))
        };
        let (done, (busy, gone)) = future::zip(run, reload).await;
        assert_eq!(done.outcome, Outcome::Exited(0), "{}", done.output);
        assert_eq!(busy, Err(Outcome::Busy), "changed, still running");
        assert_eq!(gone, Err(Outcome::UnknownExecutor));
    });
    assert_eq!(executors.check("kept", &local()), Ok(()));
    assert_eq!(
        executors.check("slow", &local()),
        Err(Outcome::UnknownExecutor)
    );
}

#[test]
fn a_program_is_found_as_exec_finds_it_or_the_reason_is_said() {
    assert!(find_program("sh").is_ok_and(|path| path.is_absolute()));
    assert_eq!(
        find_program("/bin/sh").ok(),
        Some(std::path::PathBuf::from("/bin/sh"))
    );
    let missing = find_program("/nonexistent/program").expect_err("missing");
    assert!(missing.contains("no such program"), "{missing}");
    let missing = find_program("shoal-no-such-program").expect_err("not on PATH");
    assert!(missing.contains("no such program"), "{missing}");
    let plain = std::env::temp_dir().join(format!("shoal-not-executable-{}", std::process::id()));
    std::fs::write(&plain, "#!/bin/sh\n").expect("written");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let error = find_program(&plain.display().to_string()).expect_err("not executable");
    assert!(error.contains("not executable"), "{error}");
    let _ = std::fs::remove_file(&plain);
    let error = find_program("/").expect_err("a directory");
    assert!(error.contains("not a file"), "{error}");
}
