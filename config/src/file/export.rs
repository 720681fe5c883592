//! `[[export]]`: this node's own points to an existing time-series engine.

use super::sources::{parse_url, Url};
use super::{DeTable, Range, Walker};
use std::path::PathBuf;
use std::time::Duration;

/// Samples kept while the engine is down, unless `buffer` says otherwise.
pub(super) const EXPORT_BUFFER: usize = 10_000;
/// The most samples kept per export, whatever `buffer` says (about 20 MB
/// of lines: a Pi's memory is not the engine's).
pub(super) const MAX_EXPORT_BUFFER: usize = 200_000;
/// The most samples per request (about 1 MB of body).
const MAX_BATCH: usize = 10_000;

/// `[[export]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSection {
    /// `influx`: InfluxDB line protocol over HTTP.
    pub kind: String,
    /// Where to POST (its path and query as the engine wants them).
    pub url: Url,
    /// The URL as written, for messages, logs, `/api/stats` and metric
    /// labels: the values of credential parameters (`p`, `password`,
    /// `token`) replaced by `***`.
    pub url_text: String,
    /// Which of this node's points: a glob on `NODE/NAME` or `NAME`.
    pub points: String,
    /// Samples kept while the engine is down; beyond, the oldest go.
    pub buffer: usize,
    /// Samples per request at most.
    pub batch: usize,
    /// How often what waits is sent.
    pub interval: Duration,
    /// `Authorization: Token ...` (InfluxDB 2) from this file's first line.
    pub token_file: Option<PathBuf>,
    /// Basic auth user (InfluxDB 1).
    pub username: Option<String>,
    /// Basic auth password file (first line).
    pub password_file: Option<PathBuf>,
}

impl Walker<'_> {
    pub(super) fn export(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Option<ExportSection> {
        let p = "export.";
        self.known_keys(
            table,
            p,
            &[
                "kind",
                "url",
                "points",
                "buffer",
                "batch",
                "interval",
                "token_file",
                "username",
                "password_file",
            ],
        );
        let kind = match self.required_string(table, p, "kind", span.clone()) {
            Some((kind, _)) if kind == "influx" => Some(kind),
            Some((kind, span)) => {
                self.problem(
                    span,
                    format!("export.kind {kind:?}: the kind known is \"influx\" (InfluxDB line protocol: InfluxDB, VictoriaMetrics, Telegraf, QuestDB)"),
                );
                None
            }
            None => None,
        };
        let url = self
            .required_string(table, p, "url", span)
            .and_then(|(text, span)| match parse_url(&text, "http", "https") {
                Ok(url) => Some((url, redacted(&text))),
                Err(why) => {
                    self.problem(span, format!("export.url {why}"));
                    None
                }
            });
        let points = match self.string(table, p, "points") {
            None => "*".to_owned(),
            Some((glob, span)) if glob.is_empty() || glob.split('/').count() > 2 => {
                self.problem(
                    span,
                    format!("export.points {glob:?} must be NAME or NODE/NAME, globs allowed"),
                );
                String::new()
            }
            Some((glob, _)) => glob,
        };
        let count = |walker: &mut Self, key: &str, default: usize, most: usize| match walker
            .integer(table, p, key)
        {
            None => default,
            Some((n, _)) if (1..=most as i64).contains(&n) => n as usize,
            Some((n, span)) => {
                walker.problem(span, format!("export.{key} {n} must be 1 to {most}"));
                default
            }
        };
        let buffer = count(self, "buffer", EXPORT_BUFFER, MAX_EXPORT_BUFFER);
        let batch = count(self, "batch", 5_000, MAX_BATCH);
        let interval = self
            .duration(table, p, "interval")
            .unwrap_or(Duration::from_secs(10));
        if interval.is_zero() {
            let span = self.span_of(table, "interval").unwrap_or(0..0);
            self.problem(span, "export.interval must be above zero".to_owned());
        }
        let path = |walker: &mut Self, key: &str| {
            walker.string(table, p, key).map(|(s, _)| PathBuf::from(s))
        };
        let token_file = path(self, "token_file");
        let password_file = path(self, "password_file");
        let username = self.string(table, p, "username").map(|(s, _)| s);
        if token_file.is_some() && (username.is_some() || password_file.is_some()) {
            let span = self.span_of(table, "token_file").unwrap_or(0..0);
            self.problem(
                span,
                "export.token_file (InfluxDB 2) or username and password_file (InfluxDB 1), not both"
                    .to_owned(),
            );
        }
        let (url, url_text) = url?;
        Some(ExportSection {
            kind: kind?,
            url,
            url_text,
            points,
            buffer,
            batch,
            interval,
            token_file,
            username,
            password_file,
        })
    }
}

/// `url` with the values of its credential query parameters (InfluxDB
/// 1.x takes `u` and `p`; `password` and `token` too) replaced by `***`,
/// so a password written into the URL never reaches a log line, an API
/// answer or a metric label.
pub(crate) fn redacted(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if matches!(key, "p" | "password" | "token") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests;
