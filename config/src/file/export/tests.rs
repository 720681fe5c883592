//! `[[export]]`: defaults, and each mistake with its place.

use super::super::tests::{check, problems};
use super::*;

#[test]
fn an_influx_export_takes_a_url_and_sensible_defaults() {
    let config = check(
        "[[export]]\nkind = \"influx\"\nurl = \"http://192.168.1.5:8428/write\"\n\
         [[export]]\nkind = \"influx\"\nurl = \"http://influx:8086/api/v2/write?org=home&bucket=shoal\"\n\
         points = \"*/temp*\"\nbuffer = 100\nbatch = 50\ninterval = \"1s\"\ntoken_file = \"/etc/shoal/influx.token\"\n",
    )
    .expect("valid");
    let first = &config.exports[0];
    assert_eq!(first.url.authority(), "192.168.1.5:8428");
    assert_eq!(first.url.path, "/write");
    assert_eq!(
        (first.points.as_str(), first.buffer, first.batch),
        ("*", EXPORT_BUFFER, 5_000)
    );
    assert_eq!(first.interval, Duration::from_secs(10));
    let second = &config.exports[1];
    assert_eq!(second.url.path, "/api/v2/write?org=home&bucket=shoal");
    assert_eq!(
        (second.points.as_str(), second.buffer, second.batch),
        ("*/temp*", 100, 50)
    );
    assert_eq!(
        second.token_file,
        Some(PathBuf::from("/etc/shoal/influx.token"))
    );
}

#[test]
fn two_exports_to_one_url_are_refused() {
    let one = "[[export]]\nkind = \"influx\"\nurl = \"http://x/write\"\n";
    let all = problems(&format!("{one}{one}")).join("\n");
    assert!(
        all.contains("duplicate export name \"http://x/write\""),
        "{all}"
    );
}

#[test]
fn bad_exports_are_each_named_with_their_place() {
    for (section, expected) in [
        ("url = \"http://x/write\"\n", "export needs `kind`"),
        (
            "kind = \"graphite\"\nurl = \"http://x/\"\n",
            "export.kind \"graphite\": the kind known is \"influx\"",
        ),
        ("kind = \"influx\"\n", "url"),
        (
            "kind = \"influx\"\nurl = \"https://cloud/write\"\n",
            "export.url \"https://cloud/write\": https:// is not supported",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\nbuffer = 0\n",
            "export.buffer 0 must be 1 to 200000",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\nbatch = -1\n",
            "export.batch -1 must be 1 to 10000",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\npoints = \"a/b/c\"\n",
            "export.points \"a/b/c\" must be NAME or NODE/NAME",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\ninterval = \"0s\"\n",
            "export.interval must be above zero",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\ntoken_file = \"/t\"\nusername = \"u\"\n",
            "not both",
        ),
        (
            "kind = \"influx\"\nurl = \"http://x/\"\ncolour = 1\n",
            "unknown key `export.colour`",
        ),
    ] {
        let all = problems(&format!("[[export]]\n{section}")).join("\n");
        assert!(all.contains(expected), "{section}: {all}");
    }
}

#[test]
fn a_password_in_the_url_never_shows() {
    assert_eq!(
        redacted("http://db:8086/write?db=shoal&u=me&p=s3cret"),
        "http://db:8086/write?db=shoal&u=me&p=***"
    );
    assert_eq!(
        redacted("http://db/api/v2/write?org=o&bucket=b&token=abc&password=x"),
        "http://db/api/v2/write?org=o&bucket=b&token=***&password=***"
    );
    assert_eq!(redacted("http://db:8428/write"), "http://db:8428/write");
    let config = check("[[export]]\nkind = \"influx\"\nurl = \"http://db/write?db=x&p=s3cret\"\n")
        .expect("valid");
    assert_eq!(config.exports[0].url_text, "http://db/write?db=x&p=***");
    assert!(config.exports[0].url.path.contains("s3cret"), "still sent");
}
