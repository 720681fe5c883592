//! Sensors that read from outside the Pi's pins: `http` (a GET on an
//! interval), `command` (an argv run on an interval) and `websocket` (a
//! `ws://` feed), besides `mqtt`. Their URLs, commands, headers and units
//! are checked here, each problem with its position.

use super::{DeTable, Range, Setting, Walker};
use std::collections::BTreeMap;
use toml::de::DeValue;

/// A plain `http://` or `ws://` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// `host:port` as a `Host` header and a socket address take it.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host[:port]` (IPv6 in brackets) of `url`.
pub(super) fn host_port(
    authority: &str,
    default_port: u16,
    url: &str,
) -> Result<(String, u16), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, tail) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: an IPv6 address needs its closing ]"))?;
        if !tail.is_empty() && !tail.starts_with(':') {
            return Err(format!("{url:?}: only :PORT may follow an IPv6 address"));
        }
        (host, tail.strip_prefix(':'))
    } else if authority.matches(':').count() > 1 {
        return Err(format!("{url:?}: write an IPv6 address in brackets, [::1]"));
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
    if !valid_host {
        return Err(format!("{url:?} has no valid host"));
    }
    let port = match port {
        None => default_port,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("{url:?}: the port must be 1 to 65535")),
        },
    };
    Ok((host.to_owned(), port))
}

/// Parses `scheme://host[:port][/path]`; `secure` is the TLS scheme that
/// is refused with a reason (the agent carries no TLS stack).
pub fn parse_url(url: &str, scheme: &str, secure: &str) -> Result<Url, String> {
    if url.starts_with(&format!("{secure}://")) {
        return Err(format!(
            "{url:?}: {secure}:// is not supported (the agent has no TLS); use {scheme}:// on the LAN, or a local proxy"
        ));
    }
    let rest = url
        .strip_prefix(scheme)
        .and_then(|rest| rest.strip_prefix("://"))
        .ok_or_else(|| format!("{url:?} must look like {scheme}://HOST[:PORT]/PATH"))?;
    if url.chars().any(|c| c.is_control() || c == ' ') {
        return Err(format!(
            "{url:?} has spaces or control characters (write them as %20 ...)"
        ));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(format!(
            "{url:?}: put credentials in username and password_file, not in the URL"
        ));
    }
    let (host, port) = host_port(authority, 80, url)?;
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(Url { host, port, path })
}

/// Request headers the agent writes itself (extra ones would duplicate
/// them; `Authorization` comes from `username` and `password_file`).
const RESERVED_HEADERS: &[&str] = &[
    "Host",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Upgrade",
    "Authorization",
];

/// Whether `name` is an HTTP header name (RFC 9110 token characters).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Walker<'_> {
    /// The settings particular to `http`, `command` and `websocket`
    /// sensors: what each needs, checked (`settings` holds the scalar ones).
    pub(super) fn check_source(
        &mut self,
        table: &DeTable<'_>,
        driver: &str,
        settings: &BTreeMap<String, Setting>,
        span: Range<usize>,
    ) {
        let (scheme, secure) = match driver {
            "http" => ("http", "https"),
            "websocket" => ("ws", "wss"),
            _ => return,
        };
        match settings.get("url") {
            Some(Setting::Text(url)) => {
                if let Err(why) = parse_url(url, scheme, secure) {
                    let span = self.span_of(table, "url").unwrap_or(span);
                    self.problem(span, format!("sensor.url {why}"));
                }
            }
            Some(_) => {
                let span = self.span_of(table, "url").unwrap_or(span);
                self.problem(span, "sensor.url must be a string".to_owned());
            }
            None => self.problem(span, format!("a {driver} sensor needs `url`")),
        }
    }

    /// `command = ["/usr/bin/prog", "arg", ...]`: an argv, run without a shell.
    pub(super) fn command_argv(&mut self, table: &DeTable<'_>, span: Range<usize>) -> Vec<String> {
        let Some(value) = table.get("command") else {
            self.problem(
                span,
                "a command sensor needs `command = [\"/path/to/program\", \"arg\", ...]`"
                    .to_owned(),
            );
            return Vec::new();
        };
        let mut argv = Vec::new();
        match value.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    match item.get_ref() {
                        DeValue::String(arg) if !arg.contains('\0') => argv.push(arg.to_string()),
                        _ => self.problem(
                            item.span(),
                            "sensor.command entries must be strings".to_owned(),
                        ),
                    }
                }
            }
            _ => self.problem(
                value.span(),
                "sensor.command must be a list: the program and its arguments (no shell)"
                    .to_owned(),
            ),
        }
        if argv.first().is_some_and(String::is_empty) || argv.is_empty() {
            self.problem(
                value.span(),
                "sensor.command needs a program to run".to_owned(),
            );
        }
        argv
    }

    /// `headers = { Name = "value", ... }` of an `http` sensor.
    pub(super) fn headers(&mut self, table: &DeTable<'_>) -> Vec<(String, String)> {
        let Some(value) = table.get("headers") else {
            return Vec::new();
        };
        let DeValue::Table(fields) = value.get_ref() else {
            self.problem(
                value.span(),
                "sensor.headers must be a table: { Name = \"value\" }".to_owned(),
            );
            return Vec::new();
        };
        let mut headers = Vec::new();
        for (name, text) in fields.iter() {
            let name = name.get_ref().to_string();
            match text.get_ref() {
                DeValue::String(_)
                    if RESERVED_HEADERS
                        .iter()
                        .any(|h| h.eq_ignore_ascii_case(&name)) =>
                {
                    self.problem(
                        text.span(),
                        format!("sensor.headers.{name}: the agent sets {name} itself"),
                    );
                }
                DeValue::String(text)
                    if is_header_name(&name)
                        && !text.chars().any(|c| c.is_control() && c != '\t') =>
                {
                    headers.push((name, text.to_string()));
                }
                _ => self.problem(
                    text.span(),
                    format!("sensor.headers.{name}: a header name and a one-line string value"),
                ),
            }
        }
        headers
    }

    /// `unit = "W"` (every point) or `unit = { field = "W", ... }`, as
    /// units by point name; `points` are the sensor's (json field, point).
    pub(super) fn units(
        &mut self,
        table: &DeTable<'_>,
        points: &[(String, String)],
    ) -> BTreeMap<String, String> {
        let Some(value) = table.get("unit") else {
            return BTreeMap::new();
        };
        let mut units = BTreeMap::new();
        let mut put = |walker: &mut Self, point: &str, unit: &str, span: Range<usize>| {
            if unit.len() > 8 || unit.chars().any(char::is_control) {
                walker.problem(span, format!("sensor.unit {unit:?}: at most 8 bytes"));
            } else {
                units.insert(point.to_owned(), unit.to_owned());
            }
        };
        match value.get_ref() {
            DeValue::String(unit) => {
                for (_, point) in points {
                    put(self, point, unit, value.span());
                }
            }
            DeValue::Table(fields) => {
                for (field, unit) in fields.iter() {
                    let field = field.get_ref().to_string();
                    let point = points.iter().find(|(f, _)| *f == field);
                    match (unit.get_ref(), point) {
                        (DeValue::String(text), Some((_, point))) => {
                            put(self, point, text, unit.span());
                        }
                        (DeValue::String(_), None) => self.problem(
                            unit.span(),
                            format!("sensor.unit.{field}: no json field {field:?}"),
                        ),
                        _ => self
                            .problem(unit.span(), format!("sensor.unit.{field} must be a string")),
                    }
                }
            }
            _ => self.problem(
                value.span(),
                "sensor.unit must be a string or a table of them by json field".to_owned(),
            ),
        }
        units
    }
}

#[cfg(test)]
mod tests;
