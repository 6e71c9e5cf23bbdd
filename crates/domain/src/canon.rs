//! Canonical text of a value, the same whether it comes from the warehouse (after
//! [`crate::schema::convert`]) or is read back from MySQL (the sync engine maps the driver's
//! values onto [`of_text`], [`of_bytes`] and the date/time helpers here): how stream-sync
//! matches keys of both sides and how both binaries' `verify` compare rows. Pure functions.

use crate::schema::{BqType, Column, SqlValue};

/// FNV-1a offset basis: start of [`fnv1a_extend`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Continues a 64-bit FNV-1a hash over `bytes`. A stable hash (std's isn't, across releases)
/// for lock names, shard assignment and row digests.
pub fn fnv1a_extend(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV_OFFSET, bytes)
}

/// Stands for SQL NULL (never produced by a real value).
pub const NULL: &str = "\u{0}NULL";
/// Separates the parts of a composite key.
pub const KEY_SEP: char = '\u{1f}';

/// Canonical text of a converted warehouse value of `col`.
pub fn of_sql(col: &Column, v: &SqlValue) -> String {
    match v {
        SqlValue::Null => NULL.to_string(),
        SqlValue::Int(i) => i.to_string(),
        SqlValue::Double(f) => format!("{f:?}"),
        SqlValue::Text(s) => of_text(col, s),
        SqlValue::Bytes(b) => of_bytes(b),
    }
}

/// A composite key's canonical text.
pub fn key<I: IntoIterator<Item = String>>(parts: I) -> String {
    let mut out = String::new();
    for (i, p) in parts.into_iter().enumerate() {
        if i > 0 {
            out.push(KEY_SEP);
        }
        out.push_str(&p);
    }
    out
}

/// A key for messages: parts joined by `, `.
pub fn display_key(key: &str) -> String {
    key.split(KEY_SEP).collect::<Vec<_>>().join(", ")
}

/// Canonical text of a value of `col` that arrived as text (either side).
pub fn of_text(col: &Column, s: &str) -> String {
    match col.bq {
        BqType::Numeric | BqType::BigNumeric => decimal(s),
        BqType::Json => serde_json::from_str::<serde_json::Value>(s)
            .map(|v| v.to_string())
            .unwrap_or_else(|_| s.to_string()),
        BqType::Bool => match s {
            "true" => "1".into(),
            "false" => "0".into(),
            other => other.into(),
        },
        BqType::Datetime | BqType::Timestamp if s.len() == 19 => format!("{s}.000000"),
        BqType::Time if s.len() == 8 => format!("{s}.000000"),
        _ => s.to_string(),
    }
}

/// `12.500` → `12.5`, `3.000` → `3`, `-0.0` → `0`.
fn decimal(s: &str) -> String {
    let t = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    };
    let t = if t.is_empty() { "0" } else { t };
    if t == "-0" {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Canonical text of a BYTES value: lower-case hex.
pub fn of_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(bq: BqType) -> Column {
        Column {
            name: crate::ident::Ident::parse("c").unwrap(),
            bq,
            required: false,
            varchar: None,
        }
    }

    #[test]
    fn different_values_and_null_differ() {
        let c = col(BqType::String);
        assert_ne!(
            of_sql(&c, &SqlValue::Null),
            of_sql(&c, &SqlValue::Text(String::new()))
        );
        assert_ne!(
            of_sql(&c, &SqlValue::Text("a".into())),
            of_sql(&c, &SqlValue::Text("A".into()))
        );
    }

    #[test]
    fn keys_join_and_display() {
        let k = key(["1".to_string(), "a".to_string()]);
        assert_eq!(display_key(&k), "1, a");
    }
}
