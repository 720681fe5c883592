//! Network namespaces on one bridge: a hub namespace holds the bridge, each
//! agent gets a namespace with `eth0` on it (10.77.0.0/24). Nothing is
//! created in the machine's own namespace. Names carry a per-run prefix;
//! everything is deleted on drop, also when a scenario fails.

use std::process::{Command, Stdio};

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespace scenarios cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    unavailable_with(&[("ip", "iproute2"), ("iptables", "iptables")])
}

/// Why namespaces cannot be made here with `tools` (program, Debian
/// package), if they cannot: not root, or a tool missing.
pub fn unavailable_with(tools: &[(&str, &str)]) -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(1).map(|uid| uid == "0")
        })
        .unwrap_or(false);
    if !root {
        return Some("not root (namespaces need root)".into());
    }
    for &(tool, package) in tools {
        if run(tool, &["-V"]).is_err() {
            return Some(format!("`{tool}` is missing (apt-get install {package})"));
        }
    }
    None
}

/// Every namespace existing now, for [`delete_all`] when the bench panics.
static EXISTING: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn add_namespace(ns: &str) -> Result<(), String> {
    run("ip", &["netns", "add", ns])?;
    EXISTING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ns.to_owned());
    Ok(())
}

fn delete_namespace(ns: &str) {
    let _ = run("ip", &["netns", "del", ns]);
    EXISTING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|n| n != ns);
}

/// Deletes every namespace still there; for the panic hook.
pub fn delete_all() {
    let all = std::mem::take(&mut *EXISTING.lock().unwrap_or_else(|e| e.into_inner()));
    for ns in all {
        let _ = run("ip", &["netns", "del", &ns]);
    }
}

/// The namespaces of one measurement.
#[derive(Debug)]
pub struct Lab {
    hub: String,
    hosts: Vec<String>,
}

impl Lab {
    /// `hosts` namespaces named `<prefix>n1`..., on a bridge in `<prefix>hub`.
    pub fn new(prefix: &str, hosts: usize) -> Result<Lab, String> {
        let hub = format!("{prefix}hub");
        let mut lab = Lab {
            hub: hub.clone(),
            hosts: Vec::new(),
        };
        add_namespace(&hub)?;
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &hub, "link", "set", "br0", "up"])?;
        for k in 1..=hosts {
            let ns = format!("{prefix}n{k}");
            add_namespace(&ns)?;
            lab.hosts.push(ns.clone());
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            let outer = format!("v{k}");
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            )?;
            run("ip", &["-n", &hub, "link", "set", &outer, "master", "br0"])?;
            run("ip", &["-n", &hub, "link", "set", &outer, "up"])?;
            let address = format!("{}/24", Lab::address(k));
            run(
                "ip",
                &[
                    "-n", &ns, "addr", "add", &address, "brd", "+", "dev", "eth0",
                ],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lab)
    }

    /// The address of host `k` (from 1).
    pub fn address(k: usize) -> String {
        format!("10.77.0.{}", 10 + k)
    }

    /// The namespace of host `k` (from 1).
    fn namespace(&self, k: usize) -> &str {
        &self.hosts[k - 1]
    }

    /// `argv` run inside host `k`'s namespace.
    pub fn wrap(&self, k: usize, argv: Vec<String>) -> Vec<String> {
        let mut wrapped = vec!["ip".into(), "netns".into(), "exec".into()];
        wrapped.push(self.namespace(k).to_owned());
        wrapped.extend(argv);
        wrapped
    }

    /// Drops `share` (0 to 1) of the packets arriving at every host's eth0.
    pub fn set_loss(&self, share: f64) -> Result<(), String> {
        for ns in &self.hosts {
            let _ = run("ip", &["netns", "exec", ns, "iptables", "-F", "INPUT"]);
            if share > 0.0 {
                run(
                    "ip",
                    &[
                        "netns",
                        "exec",
                        ns,
                        "iptables",
                        "-A",
                        "INPUT",
                        "-i",
                        "eth0",
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &format!("{share}"),
                        "-j",
                        "DROP",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Bytes host `k` has sent so far (what its bridge port received).
    pub fn sent_bytes(&self, k: usize) -> Result<u64, String> {
        let json = run(
            "ip",
            &[
                "-n",
                &self.hub,
                "-s",
                "-j",
                "link",
                "show",
                &format!("v{k}"),
            ],
        )?;
        let value: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("ip -j: {e}"))?;
        value[0]["stats64"]["rx"]["bytes"]
            .as_u64()
            .ok_or_else(|| format!("no rx bytes for v{k} in {json}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            delete_namespace(ns);
        }
    }
}
