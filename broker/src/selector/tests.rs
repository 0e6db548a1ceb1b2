use proptest::prelude::*;

use super::*;
use crate::router::{Destination, DEFAULT_PRIORITY};

fn message(headers: &[(&str, &str)]) -> Message {
    Message {
        seq: 1,
        message_id: "ID:b-1".into(),
        destination: Destination::parse("/queue/q").unwrap(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Vec::new(),
        stored: false,
        sender: None,
        expires: 0,
        priority: DEFAULT_PRIORITY,
        group: None,
        deliver_at: 0,
    }
}

#[test]
fn selectors_select_as_jms_says() {
    let m = message(&[
        ("price", "12.5"),
        ("qty", "3"),
        ("colour", "blue"),
        ("type", "order"),
        ("urgent", "true"),
        ("path", "a_b%c"),
    ]);
    let cases: &[(&str, bool)] = &[
        ("price > 10", true),
        ("price > 10 AND qty < 3", false),
        ("price > 10 OR qty < 3", true),
        ("NOT (price > 10)", false),
        ("price * qty = 37.5", true),
        ("-qty + 4 = 1", true),
        ("price / 0 > 1", false),
        ("colour = 'blue'", true),
        ("colour <> 'blue'", false),
        ("colour IN ('red', 'blue')", true),
        ("colour NOT IN ('red', 'blue')", false),
        ("colour LIKE 'bl%'", true),
        ("colour LIKE 'b_ue'", true),
        ("colour LIKE 'b_e'", false),
        ("colour NOT LIKE '%u%'", false),
        ("path LIKE 'a\\_b\\%c' ESCAPE '\\'", true),
        ("path LIKE 'a\\_b\\%' ESCAPE '\\'", false),
        ("qty BETWEEN 1 AND 3", true),
        ("qty NOT BETWEEN 1 AND 3", false),
        ("missing IS NULL", true),
        ("colour IS NOT NULL", true),
        ("urgent = TRUE", true),
        ("urgent", true),
        ("JMSType = 'order'", true),
        ("JMSPriority = 4", true),
        ("JMSDeliveryMode = 'NON_PERSISTENT'", true),
        ("JMSMessageID = 'ID:b-1'", true),
        // Three-valued logic: a missing header is NULL, unknown selects nothing.
        ("missing = 1", false),
        ("NOT (missing = 1)", false),
        ("missing = 1 OR price > 10", true),
        ("missing = 1 AND price > 10", false),
        ("NOT (missing = 1 AND price < 10)", true),
        ("colour > 'a'", false),
        ("colour = 1", false),
        ("1 = 1.0", true),
        ("1e1 = 10", true),
        ("'it''s' = 'it''s'", true),
    ];
    for (text, expected) in cases {
        let selector = Selector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(selector.matches(&m), *expected, "{text}");
    }
}

#[test]
fn errors_name_the_position() {
    let cases: &[(&str, usize, &str)] = &[
        ("price >", 8, "expected a value, found the end"),
        ("price > > 1", 9, "expected a value"),
        ("colour LIKE 3", 13, "a string pattern"),
        ("colour IN ('a' 'b')", 16, "',' or ')'"),
        ("a = 'open", 5, "unterminated string"),
        ("a = 1 b", 7, "unexpected identifier b"),
        ("a # 1", 3, "unexpected character"),
        ("(a = 1", 7, "')'"),
        ("a NOT 3", 7, "LIKE, IN or BETWEEN"),
        ("a BETWEEN 1 OR 2", 13, "AND"),
    ];
    for (text, position, reason) in cases {
        let e = Selector::parse(text).expect_err(text);
        assert_eq!(e.position, *position, "{text}: {e}");
        assert!(e.reason.contains(reason), "{text}: {e}");
    }
    let deep = format!("{}a = 1{}", "(".repeat(100), ")".repeat(100));
    assert!(Selector::parse(&deep)
        .unwrap_err()
        .reason
        .contains("nested"));
    assert!(Selector::parse(&"a".repeat(5000)).is_err());
}

/// A tree the reference evaluator below understands, printed as text.
#[derive(Debug, Clone)]
enum Ref {
    Cmp(&'static str, &'static str, i64),
    Eq(&'static str, &'static str),
    Null(&'static str, bool),
    Between(&'static str, i64, i64),
    In(&'static str, Vec<&'static str>),
    Like(&'static str, &'static str),
    Not(Box<Self>),
    And(Box<Self>, Box<Self>),
    Or(Box<Self>, Box<Self>),
}

const FIELDS: [&str; 3] = ["n", "s", "gone"];
const WORDS_: [&str; 3] = ["ab", "abc", "b"];

impl Ref {
    fn text(&self) -> String {
        match self {
            Self::Cmp(f, op, n) => format!("{f} {op} {n}"),
            Self::Eq(f, w) => format!("{f} = '{w}'"),
            Self::Null(f, not) => format!("{f} IS {}NULL", if *not { "NOT " } else { "" }),
            Self::Between(f, a, b) => format!("{f} BETWEEN {a} AND {b}"),
            Self::In(f, l) => format!(
                "{f} IN ({})",
                l.iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::Like(f, p) => format!("{f} LIKE '{p}'"),
            Self::Not(e) => format!("NOT ({})", e.text()),
            Self::And(a, b) => format!("({}) AND ({})", a.text(), b.text()),
            Self::Or(a, b) => format!("({}) OR ({})", a.text(), b.text()),
        }
    }

    /// Kleene logic over `n` (a number), `s` (a string) and `gone` (absent).
    fn eval(&self, n: i64, s: &str) -> Option<bool> {
        let num = |f: &str| match f {
            "n" => Some(n),
            _ => None,
        };
        let text = |f: &str| match f {
            "s" => Some(s.to_owned()),
            "n" => Some(n.to_string()),
            _ => None,
        };
        match self {
            Self::Cmp(f, op, v) => {
                let x = num(f)?;
                Some(match *op {
                    "=" => x == *v,
                    "<>" => x != *v,
                    "<" => x < *v,
                    "<=" => x <= *v,
                    ">" => x > *v,
                    _ => x >= *v,
                })
            }
            Self::Eq(f, w) => text(f).map(|t| t == *w),
            Self::Null(f, not) => Some(text(f).is_none() != *not),
            Self::Between(f, a, b) => num(f).map(|x| *a <= x && x <= *b),
            Self::In(f, l) => text(f).map(|t| l.contains(&t.as_str())),
            Self::Like(f, p) => text(f).map(|t| {
                // Patterns here use % only at the end, or not at all.
                match p.strip_suffix('%') {
                    Some(prefix) => t.starts_with(prefix),
                    None => t == *p,
                }
            }),
            Self::Not(e) => e.eval(n, s).map(|b| !b),
            Self::And(a, b) => match (a.eval(n, s), b.eval(n, s)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            },
            Self::Or(a, b) => match (a.eval(n, s), b.eval(n, s)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
        }
    }
}

fn tree() -> impl Strategy<Value = Ref> {
    let field = prop::sample::select(FIELDS.to_vec());
    let word = prop::sample::select(WORDS_.to_vec());
    let op = prop::sample::select(vec!["=", "<>", "<", "<=", ">", ">="]);
    let leaf = prop_oneof![
        (field.clone(), op, -3i64..4).prop_map(|(f, o, n)| Ref::Cmp(f, o, n)),
        (field.clone(), word.clone()).prop_map(|(f, w)| Ref::Eq(f, w)),
        (field.clone(), any::<bool>()).prop_map(|(f, n)| Ref::Null(f, n)),
        (field.clone(), -3i64..4, -3i64..4).prop_map(|(f, a, b)| Ref::Between(f, a, b)),
        (field.clone(), prop::collection::vec(word.clone(), 1..3)).prop_map(|(f, l)| Ref::In(f, l)),
        (field, prop::sample::select(vec!["a%", "ab", "%", "b%"]))
            .prop_map(|(f, p)| Ref::Like(f, p)),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Ref::Not(Box::new(e))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Ref::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner).prop_map(|(a, b)| Ref::Or(Box::new(a), Box::new(b))),
        ]
    })
}

proptest! {
    /// What a selector selects is what a plain three-valued evaluation of
    /// the same tree says.
    #[test]
    fn selectors_agree_with_a_reference_evaluator(
        e in tree(),
        n in -3i64..4,
        s in prop::sample::select(WORDS_.to_vec()),
    ) {
        let text = e.text();
        let selector = Selector::parse(&text).map_err(|err| TestCaseError::fail(format!("{text}: {err}")))?;
        let n_text = n.to_string();
        let m = message(&[("n", n_text.as_str()), ("s", s)]);
        prop_assert_eq!(selector.matches(&m), e.eval(n, s) == Some(true), "{}", text);
    }
}
