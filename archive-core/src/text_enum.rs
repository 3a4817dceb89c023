//! Enums the index stores as text (job type and state, pack status, availability). Rust code
//! uses the enum; the text exists only at the SQL edge: `as_str()` when binding,
//! `#[sqlx(try_from = "String")]` when reading a row, and `FromStr` for API and CLI input.
//! (sqlx's `Any` driver decodes no custom types, hence text and not a derived `sqlx::Type`.)
//! SQL statements still spell states as literals where they filter on them: partial indexes
//! are only used when the query names the same literal.

/// Text that names no variant; the message lists the ones that exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a {what}; expected one of {}", expected.join(", "))]
pub struct UnknownValue {
    pub what: &'static str,
    pub text: String,
    pub expected: &'static [&'static str],
}

/// `text_enum!(/// docs  pub enum Name("what it is") { Variant = "TEXT", … })`
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$variant_meta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::text_enum::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::text_enum::UnknownValue {
                        what: $what,
                        text: text.to_string(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::text_enum::UnknownValue;

            fn try_from(text: String) -> Result<Self, Self::Error> {
                text.parse()
            }
        }

        /// Compares with the stored text (what tests and API answers see).
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    text_enum! {
        enum Colour("colour") { Red = "RED", DarkBlue = "DARK_BLUE" }
    }

    #[test]
    fn text_round_trips_and_unknown_text_names_the_choices() {
        for colour in Colour::ALL {
            assert_eq!(colour.as_str().parse::<Colour>(), Ok(*colour));
        }
        assert_eq!(Colour::DarkBlue.to_string(), "DARK_BLUE");
        assert_eq!(Colour::DarkBlue, "DARK_BLUE");
        assert_eq!(
            serde_json::to_string(&Colour::Red).expect("json"),
            "\"RED\""
        );
        let error = "GREEN".parse::<Colour>().expect_err("unknown");
        assert_eq!(
            error.to_string(),
            "`GREEN` is not a colour; expected one of RED, DARK_BLUE"
        );
    }
}
