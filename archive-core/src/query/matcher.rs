//! Turning a key's value into a matching rule (PS3.4 C.2.2.2).

use super::ValueKind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matcher {
    /// Zero-length value (or a lone `*`): matches everything, returns the value.
    Universal,
    /// Exact match (case-insensitive for person names).
    Single(String),
    /// `*` any run of characters, `?` one character.
    Wildcard(String),
    /// Inclusive range of dates or times; an open end is `None`.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Any of several values: a list of UIDs, or several modalities.
    AnyOf(Vec<String>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{value}` is not a valid {what}")]
pub struct MatcherError {
    pub value: String,
    pub what: &'static str,
}

impl Matcher {
    pub fn parse(raw: &str, kind: ValueKind) -> Result<Matcher, MatcherError> {
        let value = raw.trim_matches(|c: char| c == ' ' || c == '\0');
        if value.is_empty() || value == "*" || kind == ValueKind::Computed {
            return Ok(Matcher::Universal);
        }
        match kind {
            ValueKind::Uid => {
                let uids: Vec<String> = value
                    .split('\\')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if uids
                    .iter()
                    .any(|u| !u.chars().all(|c| c.is_ascii_digit() || c == '.'))
                {
                    return Err(MatcherError {
                        value: value.into(),
                        what: "UID list",
                    });
                }
                Ok(if uids.len() == 1 {
                    Matcher::Single(uids[0].clone())
                } else {
                    Matcher::AnyOf(uids)
                })
            }
            ValueKind::Date | ValueKind::Time => parse_range_or_single(value, kind),
            ValueKind::Integer => value
                .parse::<i64>()
                .map(|n| Matcher::Single(n.to_string()))
                .map_err(|_| MatcherError {
                    value: value.into(),
                    what: "number",
                }),
            ValueKind::ModalityList => {
                let values: Vec<String> = value
                    .split('\\')
                    .map(|m| m.trim().to_string())
                    .filter(|m| !m.is_empty())
                    .collect();
                Ok(match values.len() {
                    1 => wildcard_or_single(&values[0]),
                    _ => Matcher::AnyOf(values),
                })
            }
            ValueKind::PersonName => Ok(wildcard_or_single(&value.to_uppercase())),
            ValueKind::Text => Ok(wildcard_or_single(value)),
            ValueKind::Computed => Ok(Matcher::Universal),
        }
    }
}

fn wildcard_or_single(value: &str) -> Matcher {
    if value.contains(['*', '?']) {
        Matcher::Wildcard(value.to_string())
    } else {
        Matcher::Single(value.to_string())
    }
}

fn parse_range_or_single(value: &str, kind: ValueKind) -> Result<Matcher, MatcherError> {
    let what = if kind == ValueKind::Date {
        "date or date range"
    } else {
        "time or time range"
    };
    let valid = |part: &str| {
        part.is_empty()
            || part
                .chars()
                .all(|c| c.is_ascii_digit() || (kind == ValueKind::Time && (c == '.' || c == ':')))
                && (kind == ValueKind::Time || part.len() == 8)
    };
    let error = || MatcherError {
        value: value.into(),
        what,
    };
    match value.split_once('-') {
        Some((from, to)) => {
            let (from, to) = (from.trim(), to.trim());
            if !valid(from) || !valid(to) || (from.is_empty() && to.is_empty()) {
                return Err(error());
            }
            let norm = |s: &str| (!s.is_empty()).then(|| normalize(s, kind, s == to));
            Ok(Matcher::Range {
                from: norm(from),
                to: norm(to),
            })
        }
        None if valid(value) => Ok(Matcher::Single(normalize(value, kind, false))),
        None => Err(error()),
    }
}

/// ACR-NEMA style `HH:MM:SS` times become `HHMMSS`. An upper time bound is padded so that
/// `-1015` includes 10:15:59.999999 (stored times are compared as text).
fn normalize(value: &str, kind: ValueKind, upper_bound: bool) -> String {
    if kind != ValueKind::Time {
        return value.to_string();
    }
    let mut compact = value.replace(':', "");
    if upper_bound && !compact.contains('.') {
        while compact.len() < 6 {
            compact.push('9');
        }
        compact.push_str(".999999");
    }
    compact
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn universal_and_single() {
        assert_eq!(Matcher::parse("", ValueKind::Text), Ok(Matcher::Universal));
        assert_eq!(Matcher::parse("*", ValueKind::Text), Ok(Matcher::Universal));
        assert_eq!(Matcher::parse("  ", ValueKind::Uid), Ok(Matcher::Universal));
        assert_eq!(
            Matcher::parse("ACC1 ", ValueKind::Text),
            Ok(Matcher::Single("ACC1".into()))
        );
        assert_eq!(
            Matcher::parse("7", ValueKind::Computed),
            Ok(Matcher::Universal)
        );
    }

    #[test]
    fn wildcards_and_names() {
        assert_eq!(
            Matcher::parse("CH?ST*", ValueKind::Text),
            Ok(Matcher::Wildcard("CH?ST*".into()))
        );
        assert_eq!(
            Matcher::parse("doe^j*", ValueKind::PersonName),
            Ok(Matcher::Wildcard("DOE^J*".into()))
        );
        assert_eq!(
            Matcher::parse("Doe^John", ValueKind::PersonName),
            Ok(Matcher::Single("DOE^JOHN".into()))
        );
    }

    #[test]
    fn uid_lists() {
        assert_eq!(
            Matcher::parse("1.2.3\\1.2.4", ValueKind::Uid),
            Ok(Matcher::AnyOf(vec!["1.2.3".into(), "1.2.4".into()]))
        );
        assert!(
            Matcher::parse("1.2.*", ValueKind::Uid).is_err(),
            "no wildcards in UIDs"
        );
    }

    #[test]
    fn date_ranges() {
        let range = |f: Option<&str>, t: Option<&str>| Matcher::Range {
            from: f.map(Into::into),
            to: t.map(Into::into),
        };
        assert_eq!(
            Matcher::parse("20240101-", ValueKind::Date),
            Ok(range(Some("20240101"), None))
        );
        assert_eq!(
            Matcher::parse("-20241231", ValueKind::Date),
            Ok(range(None, Some("20241231")))
        );
        assert_eq!(
            Matcher::parse("20240101-20240131", ValueKind::Date),
            Ok(range(Some("20240101"), Some("20240131")))
        );
        assert!(Matcher::parse("2024-", ValueKind::Date).is_err());
        assert!(Matcher::parse("-", ValueKind::Date).is_err());
        assert!(Matcher::parse("yesterday", ValueKind::Date).is_err());
    }

    #[test]
    fn time_ranges_include_the_whole_upper_minute() {
        assert_eq!(
            Matcher::parse("0800-10:15", ValueKind::Time),
            Ok(Matcher::Range {
                from: Some("0800".into()),
                to: Some("101599.999999".into())
            })
        );
    }

    #[test]
    fn modality_lists() {
        assert_eq!(
            Matcher::parse("CT\\MR", ValueKind::ModalityList),
            Ok(Matcher::AnyOf(vec!["CT".into(), "MR".into()]))
        );
        assert_eq!(
            Matcher::parse("CT", ValueKind::ModalityList),
            Ok(Matcher::Single("CT".into()))
        );
    }
}
