//! Unit tests of `expr`: the expression parser.
use super::*;

fn point(node: &str, name: &str) -> Pattern {
    Pattern {
        node: node.to_owned(),
        name: name.to_owned(),
    }
}

fn err(text: &str) -> (usize, String) {
    let error = parse(text).expect_err("must not parse");
    (error.at, error.message)
}

#[test]
fn the_interface_examples_parse() {
    assert_eq!(
        parse("avg(*/temperature) > 26"),
        Ok(Expr::Binary(
            Op::Gt,
            Box::new(Expr::Aggregate(Aggregate::Avg, point("*", "temperature"))),
            Box::new(Expr::Number(26.0))
        ))
    );
    assert!(parse("livingroom/temperature > 26 and not bedroom/window").is_ok());
    assert!(parse("count(*/motion) >= 2 or any(hall-*/door)").is_ok());
    assert!(parse("(pi-1/a + pi-2/b) / 2 - 0.5 * 3 <= -1e3").is_ok());
    assert!(parse("self/fan == true").is_ok());
}

#[test]
fn precedence_is_or_and_not_compare_sum_product() {
    let parsed = parse("a/x + b/x * 2 > 3 or c/y and not d/z").expect("parses");
    let Expr::Binary(Op::Or, left, right) = parsed else {
        panic!("or at the top: {parsed:?}");
    };
    assert!(matches!(*left, Expr::Binary(Op::Gt, _, _)));
    assert!(matches!(*right, Expr::Binary(Op::And, _, _)));
    let Expr::Binary(Op::Gt, sum, _) = *left else {
        unreachable!()
    };
    assert!(
        matches!(*sum, Expr::Binary(Op::Add, _, ref product) if matches!(**product, Expr::Binary(Op::Mul, _, _)))
    );
}

#[test]
fn errors_say_what_and_where() {
    assert_eq!(
        err("avg(*/temperature) >"),
        (20, "the expression ends too early".to_owned())
    );
    assert_eq!(
        err("*/temperature > 26"),
        (0, "*/temperature matches several points: wrap it in avg, min, max, sum, count, any or all".to_owned())
    );
    assert_eq!(
        err("temperature > 26"),
        (
            0,
            "unknown word \"temperature\": a point is NODE/NAME (self/NAME on this node)"
                .to_owned()
        )
    );
    assert_eq!(
        err("a/x = 1"),
        (4, "`=` is not an operator: compare with `==`".to_owned())
    );
    assert_eq!(
        err("a/x > 1 b/y"),
        (
            8,
            "unexpected text after the expression (a missing `and`/`or`?)".to_owned()
        )
    );
    assert_eq!(
        err("1 < a/x < 3"),
        (
            8,
            "comparisons do not chain: write `a < b and b < c`".to_owned()
        )
    );
    assert_eq!(err("avg(a/x"), (7, "expected `)`".to_owned()));
    assert_eq!(
        err("avg(3)"),
        (4, "avg takes a point pattern like */temperature".to_owned())
    );
    assert_eq!(
        err("a/ > 1"),
        (2, "a/ needs a point name after the `/`".to_owned())
    );
    assert_eq!(
        err("a/x > 1 # 2"),
        (8, "unexpected character '#'".to_owned())
    );
    assert_eq!(err("  "), (0, "the expression is empty".to_owned()));
    assert_eq!(
        err("((((((((((((((((((((((((((((((((((1))))))))))))))))))))))))))))))))))").1,
        "nested deeper than 32 levels"
    );
    assert!(parse(&"1 + ".repeat(300)).is_err());
}

#[test]
fn globs_match_names() {
    let p = point("bed*", "temp?");
    assert!(p.matches("me", "bedroom", "temp1"));
    assert!(!p.matches("me", "bedroom", "temp12"));
    assert!(!p.matches("me", "kitchen", "temp1"));
    assert!(point("self", "fan").matches("me", "me", "fan"));
    assert!(!point("self", "fan").matches("me", "other", "fan"));
    assert!(glob(b"*", b""));
    assert!(glob(b"a*b*c", b"aXXbYYc"));
    assert!(!glob(b"a*b*c", b"aXXbYY"));
}

#[test]
fn patterns_lists_every_point_read() {
    let parsed = parse("avg(*/t) > a/x and not b/y").expect("parses");
    let names: Vec<String> = parsed.patterns().iter().map(|p| p.to_string()).collect();
    assert_eq!(names, ["*/t", "a/x", "b/y"]);
}

#[test]
fn edit_distance_counts_insertions_deletions_and_substitutions() {
    assert_eq!(edit_distance("temprature", "temperature"), 1);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("abc", ""), 3);
    assert_eq!(edit_distance("same", "same"), 0);
    assert_eq!(edit_distance("°C", "°F"), 1, "characters, not bytes");
    assert!(is_close(10, 1) && is_close(10, 3) && !is_close(10, 4));
    assert!(is_close(3, 1) && !is_close(3, 2), "short names: one edit");
    assert!(!is_close(5, 0), "the same name is no suggestion");
}

fn names<'a>(own: &'a str, points: &[(&'a str, &'a str)]) -> Vec<PointName<'a>> {
    points
        .iter()
        .map(|&(node, name)| PointName {
            node,
            name,
            own: node == own,
        })
        .collect()
}

#[test]
fn the_nearest_pattern_keeps_what_already_matches() {
    let store = names(
        "pi-1",
        &[
            ("pi-1", "temperature"),
            ("pi-1", "humidity"),
            ("pi-2", "temperature"),
            ("pi-2", "pressure"),
        ],
    );
    let nearest = |node: &str, name: &str| {
        point(node, name)
            .nearest(store.iter().copied())
            .map(|p| p.to_string())
    };
    assert_eq!(
        nearest("pi-1", "temprature").as_deref(),
        Some("pi-1/temperature")
    );
    assert_eq!(
        nearest("self", "temprature").as_deref(),
        Some("self/temperature")
    );
    assert_eq!(nearest("*", "temprature").as_deref(), Some("*/temperature"));
    assert_eq!(
        nearest("pi-3", "pressure").as_deref(),
        Some("pi-2/pressure"),
        "a wrong node"
    );
    assert_eq!(
        nearest("pi-3", "presure").as_deref(),
        Some("pi-2/pressure"),
        "both wrong, close in all"
    );
    // `self` is only this node's points.
    assert_eq!(nearest("self", "presure"), None);
    // Nothing close, or a glob part that cannot be guessed: no suggestion.
    assert_eq!(nearest("pi-1", "wind_speed"), None);
    assert_eq!(nearest("pi-1", "tmp*"), None);
    assert_eq!(nearest("kitchen", "temperature"), None);
    // Ties go to the alphabetically first, whatever the order.
    let mut reversed = store.clone();
    reversed.reverse();
    for candidates in [store.clone(), reversed] {
        assert_eq!(
            point("pi-0", "temperature")
                .nearest(candidates)
                .map(|p| p.to_string())
                .as_deref(),
            Some("pi-1/temperature")
        );
    }
}

proptest::proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,80}") {
        let _ = parse(&text);
    }

    #[test]
    fn expression_shaped_text_never_panics(text in "[a-z*/ ()<>=!+\\-0-9.]{0,60}") {
        if let Err(error) = parse(&text) {
            proptest::prop_assert!(error.at <= text.len());
        }
    }
}
