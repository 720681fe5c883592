//! Figures collected per scenario, and the Markdown table of them.

use crate::agent::System;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One scenario on one network and mesh size.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// "loopback" or "namespaces".
    pub net: &'static str,
    /// Agents in the mesh.
    pub n: usize,
    /// Unit of the values.
    pub unit: &'static str,
    /// The values of each system, one per repetition.
    pub values: BTreeMap<System, Vec<f64>>,
}

/// Everything measured in a run.
#[derive(Debug, Default, Clone)]
pub struct Results {
    /// In the order first measured.
    pub rows: Vec<Row>,
    /// Measurements that did not complete, per system.
    pub failures: Vec<(System, String)>,
}

/// min, median, max.
pub fn summary(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2]
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
    };
    Some((sorted[0], median, sorted[sorted.len() - 1]))
}

/// Scenarios in report order (by prefix).
const ORDER: [&str; 12] = [
    "convergence",
    "propagation to all (agent log)",
    "propagation to all (Serf",
    "propagation to all,",
    "failure detection, first survivor (",
    "failure detection, last survivor (",
    "failure detection, first survivor,",
    "failure detection, last survivor,",
    "rejoin",
    "false failures",
    "RSS",
    "CPU",
];

/// The targets: the highest acceptable shoal/Serf ratio of medians
/// (false failures: no more than Serf's count, compared as counts).
const TARGETS: [(&str, f64); 8] = [
    ("failure detection, last survivor (", 0.5),
    ("propagation to all (agent log)", 0.5),
    ("RSS", 0.3),
    ("CPU per agent per idle minute", 0.5),
    ("bytes sent", 1.0),
    ("convergence", 1.0),
    ("rejoin", 1.0),
    ("false failures", 1.0),
];

fn target(scenario: &str) -> Option<f64> {
    TARGETS
        .iter()
        .find(|(prefix, _)| scenario.starts_with(prefix))
        .map(|&(_, limit)| limit)
}

fn number(value: f64, unit: &str) -> String {
    match unit {
        "s" if value < 10.0 => format!("{value:.3}"),
        "s" => format!("{value:.1}"),
        "MiB" => format!("{value:.1}"),
        "µs" => format!("{value:.1}"),
        "B/s" => format!("{value:.0}"),
        _ => format!("{value:.0}"),
    }
}

impl Results {
    /// Records one value.
    pub fn add(
        &mut self,
        scenario: &str,
        (net, n): (&'static str, usize),
        system: System,
        unit: &'static str,
        value: f64,
    ) {
        let index = match self
            .rows
            .iter()
            .position(|r| r.scenario == scenario && r.net == net && r.n == n)
        {
            Some(index) => index,
            None => {
                self.rows.push(Row {
                    scenario: scenario.to_owned(),
                    net,
                    n,
                    unit,
                    values: BTreeMap::new(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[index]
            .values
            .entry(system)
            .or_default()
            .push(value);
    }

    /// Records a measurement that did not complete.
    pub fn fail(&mut self, system: System, what: &str) {
        self.failures.push((system, what.to_owned()));
    }

    /// The values of one row for one system.
    pub fn values(&self, scenario: &str, net: &str, n: usize, system: System) -> &[f64] {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.net == net && r.n == n)
            .and_then(|r| r.values.get(&system))
            .map_or(&[], Vec::as_slice)
    }

    /// The Markdown table: min / median / max per system, the ratio of the
    /// medians, and the target with its verdict. Rows are grouped by
    /// network and size, scenarios in a fixed order.
    pub fn markdown(&self) -> String {
        let rank = |scenario: &str| {
            ORDER
                .iter()
                .position(|prefix| scenario.starts_with(prefix))
                .unwrap_or(ORDER.len())
        };
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|r| (r.net != "loopback", r.n, rank(&r.scenario)));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| scenario | net | N | shoal min / median / max | Serf min / median / max | shoal/Serf | target |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for row in rows {
            let cell = |system| {
                row.values
                    .get(&system)
                    .and_then(|v| summary(v).map(|s| (s, v.len())))
                    .map_or("—".to_owned(), |((lo, mid, hi), count)| {
                        let unit = if row.unit.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", row.unit)
                        };
                        format!(
                            "{} / **{}** / {}{unit} (×{count})",
                            number(lo, row.unit),
                            number(mid, row.unit),
                            number(hi, row.unit)
                        )
                    })
            };
            let median = |system| {
                row.values
                    .get(&system)
                    .and_then(|v| summary(v))
                    .map(|s| s.1)
            };
            let (ratio, verdict) = match (median(System::Shoal), median(System::Serf)) {
                (Some(ours), Some(theirs)) => {
                    let ratio = if theirs > 0.0 {
                        format!("{:.2}", ours / theirs)
                    } else if ours == 0.0 {
                        "equal".to_owned()
                    } else {
                        "∞".to_owned()
                    };
                    let verdict = target(&row.scenario).map(|limit| {
                        let met = if row.scenario.starts_with("false failures") {
                            ours <= theirs
                        } else {
                            theirs > 0.0 && ours / theirs <= limit
                        };
                        let rule = if row.scenario.starts_with("false failures") {
                            "≤ Serf".to_owned()
                        } else {
                            format!("≤ {limit}×")
                        };
                        format!("{rule}: {}", if met { "met" } else { "**missed**" })
                    });
                    (ratio, verdict.unwrap_or_default())
                }
                _ => ("—".to_owned(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.scenario,
                row.net,
                row.n,
                cell(System::Shoal),
                cell(System::Serf),
                ratio,
                verdict
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "\nMeasurements that did not complete:\n");
            for (system, what) in &self.failures {
                let _ = writeln!(out, "- {}: {what}", system.name());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_ratios() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(summary(&[]), None);
        let mut results = Results::default();
        for v in [1.0, 1.2, 1.1] {
            results.add(
                "failure detection, last survivor (kill -9)",
                ("loopback", 5),
                System::Shoal,
                "s",
                v,
            );
        }
        for v in [4.0, 5.0, 6.0] {
            results.add(
                "failure detection, last survivor (kill -9)",
                ("loopback", 5),
                System::Serf,
                "s",
                v,
            );
        }
        results.add(
            "RSS per agent, idle",
            ("loopback", 5),
            System::Shoal,
            "MiB",
            5.0,
        );
        results.add(
            "RSS per agent, idle",
            ("loopback", 5),
            System::Serf,
            "MiB",
            10.0,
        );
        let table = results.markdown();
        assert!(table.contains("| 0.22 | ≤ 0.5×: met |"), "{table}");
        assert!(table.contains("| 0.50 | ≤ 0.3×: **missed** |"), "{table}");
        assert!(
            table.contains("1.000 / **1.100** / 1.200 s (×3)"),
            "{table}"
        );
        assert_eq!(
            results.values("RSS per agent, idle", "loopback", 5, System::Serf),
            &[10.0]
        );
    }
}
