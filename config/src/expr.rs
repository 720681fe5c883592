//! The expression language of `[[rule]] when` and `[[compute]] expr`.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*
//! and     := not ("and" not)*
//! not     := "not" not | compare
//! compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
//! sum     := product (("+" | "-") product)*
//! product := unary (("*" | "/") unary)*
//! unary   := "-" unary | atom
//! atom    := NUMBER | "true" | "false" | POINT | AGGREGATE "(" POINT ")" | "(" expr ")"
//! POINT   := NODE "/" NAME        e.g. livingroom/temperature, */temperature, self/fan
//! AGGREGATE := avg | min | max | sum | count | any | all
//! ```
//!
//! `NODE` and `NAME` may hold the glob characters `*` and `?`; a plain point
//! reference must not (it names one point), an aggregate's may. `self` is
//! this node. Names may contain `-`, so subtraction needs spaces around it:
//! `a/x - b/x`. Parsing is all this module does: evaluation, with points
//! that may be unknown, is the rules engine's.

use std::fmt;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Number(f64),
    /// `true` or `false`.
    Bool(bool),
    /// One point.
    Point(Pattern),
    /// An aggregate over every point a pattern matches.
    Aggregate(Aggregate, Pattern),
    /// `-x`.
    Neg(Box<Expr>),
    /// `not x`.
    Not(Box<Expr>),
    /// A binary operation.
    Binary(Op, Box<Expr>, Box<Expr>),
}

/// A `NODE/NAME` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    /// Node name or glob (`self` for this node).
    pub node: String,
    /// Point name or glob.
    pub name: String,
}

impl Pattern {
    /// Whether it holds glob characters.
    pub fn is_glob(&self) -> bool {
        self.node.contains(['*', '?']) || self.name.contains(['*', '?'])
    }

    /// Whether `node`/`name` matches (with `own` the name of this node, for
    /// `self`).
    pub fn matches(&self, own: &str, node: &str, name: &str) -> bool {
        let node_pattern = if self.node == "self" { own } else { &self.node };
        glob(node_pattern.as_bytes(), node.as_bytes())
            && glob(self.name.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.name)
    }
}

/// A candidate for [`Pattern::nearest`]: a point in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointName<'a> {
    /// Its node's name.
    pub node: &'a str,
    /// Its name within the node.
    pub name: &'a str,
    /// Whether the node is this one (what `self` means).
    pub own: bool,
}

impl Pattern {
    /// The pattern closest to this one (which matches nothing) that would
    /// match one of `points`, as the user would write it: the part that
    /// already matches is kept (`self/temprature` → `self/temperature`,
    /// `*/temprature` → `*/temperature`), only a part without glob
    /// characters is replaced. `None` unless one is close
    /// ([`is_close`]); ties go to the alphabetically first, so the answer
    /// never depends on the order of `points`.
    pub fn nearest<'a>(&self, points: impl IntoIterator<Item = PointName<'a>>) -> Option<Pattern> {
        let literal = |part: &str| !part.contains(['*', '?']);
        let mut best: Option<(usize, Pattern)> = None;
        for point in points {
            let node_matches = if self.node == "self" {
                point.own
            } else {
                glob(self.node.as_bytes(), point.node.as_bytes())
            };
            let name_matches = glob(self.name.as_bytes(), point.name.as_bytes());
            let node_replaceable = self.node != "self" && literal(&self.node);
            let (typed, distance, candidate) = match (node_matches, name_matches) {
                (true, true) => continue,
                (true, false) if literal(&self.name) => (
                    self.name.chars().count(),
                    edit_distance(&self.name, point.name),
                    Pattern {
                        node: self.node.clone(),
                        name: point.name.to_owned(),
                    },
                ),
                (false, true) if node_replaceable => (
                    self.node.chars().count(),
                    edit_distance(&self.node, point.node),
                    Pattern {
                        node: point.node.to_owned(),
                        name: self.name.clone(),
                    },
                ),
                (false, false) if node_replaceable && literal(&self.name) => (
                    self.node.chars().count() + self.name.chars().count(),
                    edit_distance(&self.node, point.node) + edit_distance(&self.name, point.name),
                    Pattern {
                        node: point.node.to_owned(),
                        name: point.name.to_owned(),
                    },
                ),
                _ => continue,
            };
            if !is_close(typed, distance) {
                continue;
            }
            let better = match &best {
                None => true,
                Some((d, p)) => {
                    (distance, candidate.to_string().as_str()) < (*d, p.to_string().as_str())
                }
            };
            if better {
                best = Some((distance, candidate));
            }
        }
        best.map(|(_, pattern)| pattern)
    }
}

/// Whether a name `typed_len` characters long, `distance` edits from a
/// known one, is close enough to suggest it: at most a third of its length
/// (at least 1) and at most 3 edits. `temprature` → `temperature` (1 of
/// 10) is; `fan` → `led` (3 of 3) is not.
pub fn is_close(typed_len: usize, distance: usize) -> bool {
    distance > 0 && distance <= (typed_len / 3).clamp(1, 3)
}

/// The Levenshtein distance between `a` and `b` in characters: the fewest
/// insertions, deletions and substitutions that make one the other. Time
/// `a.len() * b.len()`, memory one row.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// `*` matches any run of characters, `?` one character.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Aggregates over a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    /// Mean of the known values.
    Avg,
    /// Smallest known value.
    Min,
    /// Largest known value.
    Max,
    /// Sum of the known values.
    Sum,
    /// How many matched points are known.
    Count,
    /// Whether any known value is true (non-zero).
    Any,
    /// Whether every known value is true (non-zero).
    All,
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Or,
    And,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Add,
    Sub,
    Mul,
    Div,
}

/// A parse error at a byte offset of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    /// Byte offset in the expression.
    pub at: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.at + 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Word(String),
    Point(Pattern),
    Symbol(&'static str),
    End,
}

/// Longest expression accepted, in bytes.
pub const MAX_EXPR: usize = 1024;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'*' | b'?')
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if b.is_ascii_digit() || (b == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            // A number, unless it turns out to be a point like `1/x`.
            let mut end = i;
            while end < bytes.len() && is_name_byte(bytes[end]) {
                end += 1;
            }
            if bytes.get(end) == Some(&b'/') {
                // A node name starting with a digit.
            } else {
                let mut end = i;
                while end < bytes.len()
                    && (bytes[end].is_ascii_digit()
                        || bytes[end] == b'.'
                        || ((bytes[end] == b'e' || bytes[end] == b'E')
                            && bytes
                                .get(end + 1)
                                .is_some_and(|c| c.is_ascii_digit() || *c == b'-')))
                {
                    if bytes[end] == b'e' || bytes[end] == b'E' {
                        end += 1;
                    }
                    end += 1;
                }
                let literal = &text[i..end];
                let value: f64 = literal.parse().map_err(|_| ExprError {
                    at: start,
                    message: format!("{literal:?} is not a number"),
                })?;
                tokens.push((start, Token::Number(value)));
                i = end;
                continue;
            }
        }
        // A name never starts with `-` or `.`: those are operators there.
        if is_name_byte(b) && b != b'-' && b != b'.' {
            let mut end = i;
            while end < bytes.len() && is_name_byte(bytes[end]) {
                end += 1;
            }
            let word = &text[i..end];
            if word == "*" && bytes.get(end) != Some(&b'/') {
                // Not a glob: the multiplication operator.
                tokens.push((start, Token::Symbol("*")));
                i = end;
                continue;
            }
            if bytes.get(end) == Some(&b'/') {
                let name_start = end + 1;
                let mut name_end = name_start;
                while name_end < bytes.len() && is_name_byte(bytes[name_end]) {
                    name_end += 1;
                }
                if name_end == name_start {
                    return Err(ExprError {
                        at: name_start,
                        message: format!("{word}/ needs a point name after the `/`"),
                    });
                }
                tokens.push((
                    start,
                    Token::Point(Pattern {
                        node: word.to_owned(),
                        name: text[name_start..name_end].to_owned(),
                    }),
                ));
                i = name_end;
            } else {
                tokens.push((start, Token::Word(word.to_owned())));
                i = end;
            }
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let symbol = match two {
            "<=" => Some("<="),
            ">=" => Some(">="),
            "==" => Some("=="),
            "!=" => Some("!="),
            _ => None,
        };
        if let Some(symbol) = symbol {
            tokens.push((start, Token::Symbol(symbol)));
            i += 2;
            continue;
        }
        let symbol = match b {
            b'<' => "<",
            b'>' => ">",
            b'+' => "+",
            b'-' => "-",
            b'*' => "*",
            b'/' => "/",
            b'(' => "(",
            b')' => ")",
            b'=' => {
                return Err(ExprError {
                    at: start,
                    message: "`=` is not an operator: compare with `==`".to_owned(),
                })
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or('?');
                return Err(ExprError {
                    at: start,
                    message: format!("unexpected character {c:?}"),
                });
            }
        };
        tokens.push((start, Token::Symbol(symbol)));
        i += 1;
    }
    tokens.push((text.len(), Token::End));
    Ok(tokens)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    next: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        &self.tokens[self.next.min(self.tokens.len() - 1)].1
    }

    fn at(&self) -> usize {
        self.tokens[self.next.min(self.tokens.len() - 1)].0
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if self.next < self.tokens.len() - 1 {
            self.next += 1;
        }
        token
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Token::Word(w) if w == word)
    }

    fn is_symbol(&self, symbol: &str) -> bool {
        matches!(self.peek(), Token::Symbol(s) if *s == symbol)
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.error(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.and()?;
        while self.is_word("or") {
            self.bump();
            let right = self.and()?;
            left = Expr::Binary(Op::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.not()?;
        while self.is_word("and") {
            self.bump();
            let right = self.not()?;
            left = Expr::Binary(Op::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.is_word("not") {
            self.bump();
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.sum()?;
        let op = match self.peek() {
            Token::Symbol("<") => Op::Lt,
            Token::Symbol("<=") => Op::Le,
            Token::Symbol(">") => Op::Gt,
            Token::Symbol(">=") => Op::Ge,
            Token::Symbol("==") => Op::Eq,
            Token::Symbol("!=") => Op::Ne,
            _ => return Ok(left),
        };
        self.bump();
        let right = self.sum()?;
        if matches!(
            self.peek(),
            Token::Symbol("<" | "<=" | ">" | ">=" | "==" | "!=")
        ) {
            return self.error("comparisons do not chain: write `a < b and b < c`");
        }
        Ok(Expr::Binary(op, Box::new(left), Box::new(right)))
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.product()?;
        loop {
            let op = match self.peek() {
                Token::Symbol("+") => Op::Add,
                Token::Symbol("-") => Op::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.product()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Token::Symbol("*") => Op::Mul,
                Token::Symbol("/") => Op::Div,
                _ => return Ok(left),
            };
            self.bump();
            let right = self.unary()?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.is_symbol("-") {
            self.bump();
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Neg(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        let at = self.at();
        match self.bump() {
            Token::Number(value) => Ok(Expr::Number(value)),
            Token::Point(pattern) => {
                if pattern.is_glob() {
                    return Err(ExprError {
                        at,
                        message: format!(
                            "{pattern} matches several points: wrap it in avg, min, max, sum, count, any or all"
                        ),
                    });
                }
                Ok(Expr::Point(pattern))
            }
            Token::Symbol("(") => {
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                if !self.is_symbol(")") {
                    return self.error("expected `)`");
                }
                self.bump();
                Ok(inner)
            }
            Token::Word(word) => {
                let aggregate = match word.as_str() {
                    "true" => return Ok(Expr::Bool(true)),
                    "false" => return Ok(Expr::Bool(false)),
                    "avg" => Aggregate::Avg,
                    "min" => Aggregate::Min,
                    "max" => Aggregate::Max,
                    "sum" => Aggregate::Sum,
                    "count" => Aggregate::Count,
                    "any" => Aggregate::Any,
                    "all" => Aggregate::All,
                    _ => {
                        return Err(ExprError {
                            at,
                            message: format!(
                            "unknown word {word:?}: a point is NODE/NAME (self/NAME on this node)"
                        ),
                        })
                    }
                };
                if !self.is_symbol("(") {
                    return self.error(format!("{word} needs `(NODE/NAME)`"));
                }
                self.bump();
                let pattern = match self.bump() {
                    Token::Point(pattern) => pattern,
                    _ => {
                        return Err(ExprError {
                            at: self.tokens[self.next.saturating_sub(1)].0,
                            message: format!("{word} takes a point pattern like */temperature"),
                        })
                    }
                };
                if !self.is_symbol(")") {
                    return self.error("expected `)`");
                }
                self.bump();
                Ok(Expr::Aggregate(aggregate, pattern))
            }
            Token::End => Err(ExprError {
                at,
                message: "the expression ends too early".to_owned(),
            }),
            Token::Symbol(symbol) => Err(ExprError {
                at,
                message: format!("unexpected `{symbol}`"),
            }),
        }
    }
}

/// Parses an expression.
pub fn parse(text: &str) -> Result<Expr, ExprError> {
    if text.len() > MAX_EXPR {
        return Err(ExprError {
            at: MAX_EXPR,
            message: format!("longer than {MAX_EXPR} bytes"),
        });
    }
    if text.trim().is_empty() {
        return Err(ExprError {
            at: 0,
            message: "the expression is empty".to_owned(),
        });
    }
    let mut parser = Parser {
        tokens: tokenize(text)?,
        next: 0,
        depth: 0,
    };
    let expr = parser.or()?;
    if !matches!(parser.peek(), Token::End) {
        return parser.error("unexpected text after the expression (a missing `and`/`or`?)");
    }
    Ok(expr)
}

impl Expr {
    /// Every pattern the expression reads.
    pub fn patterns(&self) -> Vec<&Pattern> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'e>(&'e self, out: &mut Vec<&'e Pattern>) {
        match self {
            Expr::Number(_) | Expr::Bool(_) => {}
            Expr::Point(p) | Expr::Aggregate(_, p) => out.push(p),
            Expr::Neg(e) | Expr::Not(e) => e.collect(out),
            Expr::Binary(_, a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
