//! SQL identifiers, parsed once: an [`Ident`] is a name that is safe in both MySQL and
//! BigQuery (letters, digits, `_`, `$`, 1..=64 characters, not starting with a digit) and
//! carries its backtick-quoted form, so SQL sites quote it without checking it again.

use std::fmt;

use serde::Deserialize;

/// Why a name is not an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid identifier (letters, digits, _ and $, 1..=64 characters, not starting with a digit)")]
pub struct IdentError(pub String);

/// A validated identifier. `Display` and [`Ident::as_str`] give the bare name (for messages and
/// metric labels); [`Ident::quoted`] the form SQL uses.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Ident {
    name: String,
    quoted: String,
}

impl Ident {
    /// Parses `name`; the only way to make an `Ident`.
    pub fn parse(name: &str) -> Result<Ident, IdentError> {
        if !is_valid(name) {
            return Err(IdentError(name.to_string()));
        }
        Ok(Ident {
            name: name.to_string(),
            quoted: quote(name),
        })
    }

    /// The bare name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The backtick-quoted name, for SQL.
    pub fn quoted(&self) -> &str {
        &self.quoted
    }
}

impl TryFrom<String> for Ident {
    type Error = IdentError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Ident::parse(&s)
    }
}

impl std::ops::Deref for Ident {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl AsRef<str> for Ident {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl std::borrow::Borrow<str> for Ident {
    fn borrow(&self) -> &str {
        &self.name
    }
}

impl PartialEq<str> for Ident {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for Ident {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl PartialEq<String> for Ident {
    fn eq(&self, other: &String) -> bool {
        &self.name == other
    }
}

impl PartialEq<Ident> for String {
    fn eq(&self, other: &Ident) -> bool {
        *self == other.name
    }
}

impl PartialEq<Ident> for str {
    fn eq(&self, other: &Ident) -> bool {
        self == other.name
    }
}

impl From<Ident> for String {
    fn from(id: Ident) -> String {
        id.name
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.name, f)
    }
}

/// Whether `name` is a safe MySQL/BigQuery identifier.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

/// Backtick-quotes a name (doubling backticks, though a valid identifier has none).
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_parse_and_quote_once() {
        let id = Ident::parse("recipe_daily_stats").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(id.as_str(), "recipe_daily_stats");
        assert_eq!(id.quoted(), "`recipe_daily_stats`");
        assert_eq!(id.to_string(), "recipe_daily_stats");
        assert_eq!(id, "recipe_daily_stats");
        assert!(Ident::parse("_PARTITIONDATE").is_ok());
        assert!(Ident::parse("a$b").is_ok());
    }

    #[test]
    fn names_that_could_break_sql_are_refused_naming_the_name() {
        for bad in ["", "1abc", "a b", "a`b", "a;drop", "ä", &"x".repeat(65)] {
            let e = Ident::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn deserializes_through_parse() {
        #[derive(Deserialize)]
        struct T {
            t: Ident,
        }
        let ok: T = toml::from_str("t = \"abc\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.t.quoted(), "`abc`");
        let bad = toml::from_str::<T>("t = \"a b\"")
            .err()
            .map(|e| e.to_string());
        assert!(bad.is_some_and(|e| e.contains("not a valid identifier")));
    }
}
