//! Canonical text of a value, the same whether it comes from the warehouse (after
//! [`crate::schema::convert`]) or is read back from MySQL: how stream-sync matches keys of both
//! sides and how both binaries' `verify` compare rows. Pure functions.

use crate::schema::{BqType, Column, SqlValue};
use mysql::Value;

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
        SqlValue::Text(s) => text(col, s),
        SqlValue::Bytes(b) => hex(b),
    }
}

/// Canonical text of a value MySQL returned (binary or text protocol) for `col`.
pub fn of_mysql(col: &Column, v: &Value) -> String {
    match v {
        Value::NULL => NULL.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Double(f) => format!("{f:?}"),
        Value::Float(f) => format!("{:?}", f64::from(*f)),
        Value::Bytes(b) => match col.bq {
            BqType::Bytes => hex(b),
            BqType::Float64 => match std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
            {
                Some(f) => format!("{f:?}"),
                None => String::from_utf8_lossy(b).into_owned(),
            },
            _ => text(col, &String::from_utf8_lossy(b)),
        },
        Value::Date(y, mo, d, h, mi, s, us) => match col.bq {
            BqType::Date => format!("{y:04}-{mo:02}-{d:02}"),
            _ => format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}"),
        },
        Value::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            format!("{sign}{hours:02}:{mi:02}:{s:02}.{us:06}")
        }
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

fn text(col: &Column, s: &str) -> String {
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

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(bq: BqType) -> Column {
        Column {
            name: "c".into(),
            bq,
            required: false,
            varchar: None,
        }
    }

    #[test]
    fn both_sides_agree_on_each_type() {
        let cases: Vec<(BqType, SqlValue, Value)> = vec![
            (BqType::Int64, SqlValue::Int(-5), Value::Int(-5)),
            (BqType::Int64, SqlValue::Int(7), Value::Bytes(b"7".to_vec())),
            (BqType::Float64, SqlValue::Double(1.5), Value::Double(1.5)),
            (
                BqType::Numeric,
                SqlValue::Text("12.5".into()),
                Value::Bytes(b"12.500000000".to_vec()),
            ),
            (
                BqType::Numeric,
                SqlValue::Text("3".into()),
                Value::Bytes(b"3.000000000".to_vec()),
            ),
            (BqType::Bool, SqlValue::Int(1), Value::Int(1)),
            (
                BqType::String,
                SqlValue::Text("ü ✓".into()),
                Value::Bytes("ü ✓".as_bytes().to_vec()),
            ),
            (
                BqType::Bytes,
                SqlValue::Bytes(vec![0, 255]),
                Value::Bytes(vec![0, 255]),
            ),
            (
                BqType::Date,
                SqlValue::Text("2026-01-02".into()),
                Value::Date(2026, 1, 2, 0, 0, 0, 0),
            ),
            (
                BqType::Timestamp,
                SqlValue::Text("2026-01-02 03:04:05.000006".into()),
                Value::Date(2026, 1, 2, 3, 4, 5, 6),
            ),
            (
                BqType::Time,
                SqlValue::Text("23:59:59.999999".into()),
                Value::Time(false, 0, 23, 59, 59, 999_999),
            ),
            (
                BqType::Json,
                SqlValue::Text(r#"{"a":[1,2]}"#.into()),
                Value::Bytes(br#"{"a": [1, 2]}"#.to_vec()),
            ),
            (BqType::Int64, SqlValue::Null, Value::NULL),
        ];
        for (bq, sql, my) in cases {
            let c = col(bq);
            assert_eq!(of_sql(&c, &sql), of_mysql(&c, &my), "{bq:?}");
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
