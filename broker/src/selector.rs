//! JMS message selectors (SQL-92 subset): the `selector` header of a
//! SUBSCRIBE. Parsed once per subscription into a tree; evaluated against
//! each message's headers with JMS's three-valued logic (a missing header
//! is NULL, and a comparison with NULL is unknown, which does not match),
//! borrowing what it reads: no allocation per message.
//!
//! Headers are strings on the wire; compared with a number, a header that
//! reads as one is that number (`price > 10` with `price:12`), and with a
//! boolean, `true`/`false` are booleans. `JMSPriority`, `JMSMessageID`,
//! `JMSDeliveryMode` (`'PERSISTENT'`/`'NON_PERSISTENT'`),
//! `JMSCorrelationID` (`correlation-id`) and `JMSType` (`type`) read the
//! message as JMS names it.

use std::fmt;

use crate::router::Message;

/// The longest selector accepted, and the deepest nesting.
const MAX_LENGTH: usize = 4096;
const MAX_DEPTH: usize = 64;

/// Why a selector does not parse, and where (1-based character position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: {reason}")]
pub struct SelectorError {
    pub position: usize,
    pub reason: String,
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Literal),
    Field(Field),
    Not(Box<Self>),
    And(Box<Self>, Box<Self>),
    Or(Box<Self>, Box<Self>),
    Compare(Cmp, Box<Self>, Box<Self>),
    Arith(Arith, Box<Self>, Box<Self>),
    Negate(Box<Self>),
    Like {
        value: Box<Self>,
        pattern: Vec<Glob>,
        negated: bool,
    },
    In {
        value: Box<Self>,
        list: Vec<String>,
        negated: bool,
    },
    Between {
        value: Box<Self>,
        low: Box<Self>,
        high: Box<Self>,
        negated: bool,
    },
    IsNull {
        value: Box<Self>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// What an identifier reads.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    Priority,
    MessageId,
    DeliveryMode,
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

/// One element of a LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Glob {
    Char(char),
    /// `_`: one character.
    One,
    /// `%`: any run of characters.
    Any,
}

/// A value during evaluation, borrowing from the message or the selector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(&'a str),
}

impl<'a> Value<'a> {
    fn num(self) -> Option<f64> {
        match self {
            Self::Num(n) => Some(n),
            Self::Str(s) => s.trim().parse().ok().filter(|n: &f64| n.is_finite()),
            _ => None,
        }
    }

    fn boolean(self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(b),
            Self::Str(s) if s.eq_ignore_ascii_case("true") => Some(true),
            Self::Str(s) if s.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        }
    }
}

impl Selector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.chars().count() > MAX_LENGTH {
            return Err(SelectorError {
                position: MAX_LENGTH,
                reason: format!("longer than {MAX_LENGTH} characters"),
            });
        }
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            depth: 0,
            end: text.chars().count() + 1,
        };
        let root = parser.or()?;
        if let Some((position, token)) = parser.tokens.get(parser.at) {
            return Err(SelectorError {
                position: *position,
                reason: format!("unexpected {token}"),
            });
        }
        Ok(Self { root })
    }

    /// Whether `message` is selected: the selector is TRUE for it (FALSE
    /// and unknown are not).
    pub fn matches(&self, message: &Message) -> bool {
        truth(eval(&self.root, message)) == Some(true)
    }
}

fn field<'a>(field: &'a Field, message: &'a Message) -> Value<'a> {
    match field {
        Field::Priority => Value::Num(f64::from(message.priority)),
        Field::MessageId => Value::Str(&message.message_id),
        Field::DeliveryMode => Value::Str(
            if message.stored
                || message
                    .headers
                    .iter()
                    .any(|(k, v)| k == "persistent" && v == "true")
            {
                "PERSISTENT"
            } else {
                "NON_PERSISTENT"
            },
        ),
        Field::Header(name) => message
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map_or(Value::Null, |(_, v)| Value::Str(v)),
    }
}

/// A value as a condition: a boolean, or a header reading `true` or
/// `false`; anything else is unknown.
fn truth(v: Value<'_>) -> Option<bool> {
    v.boolean()
}

fn from_truth(t: Option<bool>) -> Value<'static> {
    t.map_or(Value::Null, Value::Bool)
}

fn eval<'a>(expr: &'a Expr, m: &'a Message) -> Value<'a> {
    match expr {
        Expr::Literal(Literal::Str(s)) => Value::Str(s),
        Expr::Literal(Literal::Num(n)) => Value::Num(*n),
        Expr::Literal(Literal::Bool(b)) => Value::Bool(*b),
        Expr::Literal(Literal::Null) => Value::Null,
        Expr::Field(f) => field(f, m),
        Expr::Not(e) => from_truth(truth(eval(e, m)).map(|b| !b)),
        Expr::And(a, b) => match truth(eval(a, m)) {
            Some(false) => Value::Bool(false),
            left => match (left, truth(eval(b, m))) {
                (_, Some(false)) => Value::Bool(false),
                (Some(true), Some(true)) => Value::Bool(true),
                _ => Value::Null,
            },
        },
        Expr::Or(a, b) => match truth(eval(a, m)) {
            Some(true) => Value::Bool(true),
            left => match (left, truth(eval(b, m))) {
                (_, Some(true)) => Value::Bool(true),
                (Some(false), Some(false)) => Value::Bool(false),
                _ => Value::Null,
            },
        },
        Expr::Compare(op, a, b) => from_truth(compare(*op, eval(a, m), eval(b, m))),
        Expr::Arith(op, a, b) => match (eval(a, m).num(), eval(b, m).num()) {
            (Some(x), Some(y)) => {
                let r = match op {
                    Arith::Add => x + y,
                    Arith::Sub => x - y,
                    Arith::Mul => x * y,
                    Arith::Div => x / y,
                };
                if r.is_finite() {
                    Value::Num(r)
                } else {
                    Value::Null
                }
            }
            _ => Value::Null,
        },
        Expr::Negate(e) => eval(e, m).num().map_or(Value::Null, |n| Value::Num(-n)),
        Expr::Like {
            value,
            pattern,
            negated,
        } => match eval(value, m) {
            Value::Str(s) => Value::Bool(glob(pattern, s) != *negated),
            _ => Value::Null,
        },
        Expr::In {
            value,
            list,
            negated,
        } => match eval(value, m) {
            Value::Str(s) => Value::Bool(list.iter().any(|l| l == s) != *negated),
            _ => Value::Null,
        },
        Expr::Between {
            value,
            low,
            high,
            negated,
        } => {
            let v = eval(value, m);
            let within = match (
                compare(Cmp::Ge, v, eval(low, m)),
                compare(Cmp::Le, v, eval(high, m)),
            ) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            };
            from_truth(within.map(|w| w != *negated))
        }
        Expr::IsNull { value, negated } => Value::Bool((eval(value, m) == Value::Null) != *negated),
    }
}

/// A comparison; `None` when unknown (a NULL, or types that do not
/// compare).
fn compare(op: Cmp, a: Value<'_>, b: Value<'_>) -> Option<bool> {
    use std::cmp::Ordering;
    let order: Option<Ordering> = match (a, b) {
        (Value::Null, _) | (_, Value::Null) => return None,
        (Value::Str(x), Value::Str(y)) => {
            return match op {
                Cmp::Eq => Some(x == y),
                Cmp::Ne => Some(x != y),
                _ => None,
            }
        }
        (Value::Bool(_), _) | (_, Value::Bool(_)) => {
            let (x, y) = (a.boolean()?, b.boolean()?);
            return match op {
                Cmp::Eq => Some(x == y),
                Cmp::Ne => Some(x != y),
                _ => None,
            };
        }
        _ => a.num()?.partial_cmp(&b.num()?),
    };
    let order = order?;
    Some(match op {
        Cmp::Eq => order == Ordering::Equal,
        Cmp::Ne => order != Ordering::Equal,
        Cmp::Lt => order == Ordering::Less,
        Cmp::Le => order != Ordering::Greater,
        Cmp::Gt => order == Ordering::Greater,
        Cmp::Ge => order != Ordering::Less,
    })
}

/// LIKE: `%` any run, `_` one character; iterative, with one back-track
/// point per `%` (linear in practice, never recursive).
fn glob(pattern: &[Glob], text: &str) -> bool {
    let text: &[u8] = text.as_bytes();
    // Work on chars without allocating: walk byte offsets of char starts.
    let next = |at: usize| -> usize {
        let mut i = at + 1;
        while i < text.len() && (text[i] & 0xC0) == 0x80 {
            i += 1;
        }
        i
    };
    let char_at = |at: usize| -> char {
        std::str::from_utf8(&text[at..next(at)])
            .ok()
            .and_then(|s| s.chars().next())
            .unwrap_or('\u{FFFD}')
    };
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Glob::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Glob::One) => {
                p += 1;
                t = next(t);
            }
            Some(Glob::Char(c)) if *c == char_at(t) => {
                p += 1;
                t = next(t);
            }
            _ => match star {
                Some((sp, st)) => {
                    let st = next(st);
                    star = Some((sp, st));
                    p = sp + 1;
                    t = st;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|g| *g == Glob::Any)
}

// ------------------------------------------------------------- lexing

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    Word(&'static str),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ident(s) => write!(f, "identifier {s}"),
            Self::Str(s) => write!(f, "string '{s}'"),
            Self::Num(n) => write!(f, "number {n}"),
            Self::Op(o) => write!(f, "'{o}'"),
            Self::Word(w) => write!(f, "{w}"),
        }
    }
}

const WORDS: [&str; 11] = [
    "AND", "OR", "NOT", "BETWEEN", "LIKE", "ESCAPE", "IN", "IS", "NULL", "TRUE", "FALSE",
];

fn lex(text: &str) -> Result<Vec<(usize, Token)>, SelectorError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let error = |at: usize, reason: &str| SelectorError {
        position: at + 1,
        reason: reason.to_owned(),
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let token = if c.is_alphabetic() || c == '_' || c == '$' {
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match WORDS.iter().find(|w| w.eq_ignore_ascii_case(&word)) {
                Some(w) => Token::Word(w),
                None => Token::Ident(word),
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                i += 1;
                if i < chars.len() && (chars[i] == '+' || chars[i] == '-') {
                    i += 1;
                }
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // A trailing L/l (long) or d/f (double, float) as in JMS.
            if i < chars.len() && matches!(chars[i], 'l' | 'L' | 'd' | 'D' | 'f' | 'F') {
                i += 1;
            }
            let literal: String = chars[start..i]
                .iter()
                .filter(|c| !matches!(c, 'l' | 'L' | 'd' | 'D' | 'f' | 'F'))
                .collect();
            match literal.parse::<f64>() {
                Ok(n) if n.is_finite() => Token::Num(n),
                _ => return Err(error(start, &format!("bad number {literal}"))),
            }
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(error(start, "unterminated string")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            Token::Str(s)
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let op = [
                "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "(", ")", ",",
            ]
            .into_iter()
            .find(|op| two.starts_with(op))
            .ok_or_else(|| error(start, &format!("unexpected character {c:?}")))?;
            i += op.chars().count();
            Token::Op(op)
        };
        tokens.push((start + 1, token));
    }
    Ok(tokens)
}

// ------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    depth: usize,
    /// The position just past the text, for "ends too soon".
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }

    fn position(&self) -> usize {
        self.tokens.get(self.at).map_or(self.end, |(p, _)| *p)
    }

    fn error(&self, reason: impl Into<String>) -> SelectorError {
        SelectorError {
            position: self.position(),
            reason: reason.into(),
        }
    }

    fn eat_word(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if *w == word) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expected(&self, what: &str) -> SelectorError {
        match self.peek() {
            Some(t) => self.error(format!("expected {what}, found {t}")),
            None => self.error(format!("expected {what}, found the end")),
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, SelectorError>,
    ) -> Result<T, SelectorError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn or(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.and()?;
        while self.eat_word("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.not()?;
        while self.eat_word("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, SelectorError> {
        if self.eat_word("NOT") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, SelectorError> {
        let left = self.sum()?;
        let cmp = match self.peek() {
            Some(Token::Op("=")) => Some(Cmp::Eq),
            Some(Token::Op("<>")) => Some(Cmp::Ne),
            Some(Token::Op("<")) => Some(Cmp::Lt),
            Some(Token::Op("<=")) => Some(Cmp::Le),
            Some(Token::Op(">")) => Some(Cmp::Gt),
            Some(Token::Op(">=")) => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(cmp) = cmp {
            self.at += 1;
            return Ok(Expr::Compare(cmp, Box::new(left), Box::new(self.sum()?)));
        }
        if self.eat_word("IS") {
            let negated = self.eat_word("NOT");
            if !self.eat_word("NULL") {
                return Err(self.expected("NULL"));
            }
            return Ok(Expr::IsNull {
                value: Box::new(left),
                negated,
            });
        }
        let negated = self.eat_word("NOT");
        if self.eat_word("LIKE") {
            let Some(Token::Str(pattern)) = self.peek().cloned() else {
                return Err(self.expected("a string pattern"));
            };
            self.at += 1;
            let mut escape = None;
            if self.eat_word("ESCAPE") {
                match self.peek().cloned() {
                    Some(Token::Str(e)) if e.chars().count() == 1 => {
                        escape = e.chars().next();
                        self.at += 1;
                    }
                    _ => return Err(self.expected("a one-character ESCAPE string")),
                }
            }
            return Ok(Expr::Like {
                value: Box::new(left),
                pattern: compile_like(&pattern, escape),
                negated,
            });
        }
        if self.eat_word("IN") {
            if !self.eat_op("(") {
                return Err(self.expected("'('"));
            }
            let mut list = Vec::new();
            loop {
                match self.peek().cloned() {
                    Some(Token::Str(s)) => {
                        list.push(s);
                        self.at += 1;
                    }
                    _ => return Err(self.expected("a string")),
                }
                if self.eat_op(")") {
                    break;
                }
                if !self.eat_op(",") {
                    return Err(self.expected("',' or ')'"));
                }
            }
            return Ok(Expr::In {
                value: Box::new(left),
                list,
                negated,
            });
        }
        if self.eat_word("BETWEEN") {
            let low = self.sum()?;
            if !self.eat_word("AND") {
                return Err(self.expected("AND"));
            }
            let high = self.sum()?;
            return Ok(Expr::Between {
                value: Box::new(left),
                low: Box::new(low),
                high: Box::new(high),
                negated,
            });
        }
        if negated {
            return Err(self.expected("LIKE, IN or BETWEEN after NOT"));
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_op("+") {
                Arith::Add
            } else if self.eat_op("-") {
                Arith::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Arith(op, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Expr, SelectorError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                Arith::Mul
            } else if self.eat_op("/") {
                Arith::Div
            } else {
                return Ok(left);
            };
            left = Expr::Arith(op, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, SelectorError> {
        if self.eat_op("-") {
            return self.nested(|p| Ok(Expr::Negate(Box::new(p.unary()?))));
        }
        if self.eat_op("+") {
            return self.nested(Self::unary);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, SelectorError> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.expected("a value"));
        };
        let expr = match token {
            Token::Op("(") => {
                self.at += 1;
                let inner = self.nested(Self::or)?;
                if !self.eat_op(")") {
                    return Err(self.expected("')'"));
                }
                return Ok(inner);
            }
            Token::Str(s) => Expr::Literal(Literal::Str(s)),
            Token::Num(n) => Expr::Literal(Literal::Num(n)),
            Token::Word("TRUE") => Expr::Literal(Literal::Bool(true)),
            Token::Word("FALSE") => Expr::Literal(Literal::Bool(false)),
            Token::Word("NULL") => Expr::Literal(Literal::Null),
            Token::Ident(name) => Expr::Field(match name.as_str() {
                "JMSPriority" => Field::Priority,
                "JMSMessageID" => Field::MessageId,
                "JMSDeliveryMode" => Field::DeliveryMode,
                "JMSCorrelationID" => Field::Header("correlation-id".into()),
                "JMSType" => Field::Header("type".into()),
                _ => Field::Header(name),
            }),
            _ => return Err(self.expected("a value")),
        };
        self.at += 1;
        Ok(expr)
    }
}

fn compile_like(pattern: &str, escape: Option<char>) -> Vec<Glob> {
    let mut out = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            if let Some(next) = chars.next() {
                out.push(Glob::Char(next));
            }
            continue;
        }
        out.push(match c {
            '%' => Glob::Any,
            '_' => Glob::One,
            c => Glob::Char(c),
        });
    }
    out
}

#[cfg(test)]
mod tests;
