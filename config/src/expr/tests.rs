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
