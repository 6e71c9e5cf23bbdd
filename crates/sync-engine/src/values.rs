//! MySQL driver values: the bound value of a converted warehouse value, and the canonical text
//! (`domain::canon`) of a value MySQL returned, so both sides of a comparison meet.

use domain::canon;
use domain::schema::{BqType, Column, SqlValue};
use mysql::Value;

/// The bound MySQL value of a converted warehouse value.
pub fn to_mysql(v: SqlValue) -> Value {
    match v {
        SqlValue::Null => Value::NULL,
        SqlValue::Int(i) => Value::Int(i),
        SqlValue::Double(f) => Value::Double(f),
        SqlValue::Text(s) => Value::Bytes(s.into_bytes()),
        SqlValue::Bytes(b) => Value::Bytes(b),
    }
}

/// Canonical text of a value MySQL returned (binary or text protocol) for `col`.
pub fn canonical(col: &Column, v: &Value) -> String {
    match v {
        Value::NULL => canon::NULL.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Double(f) => format!("{f:?}"),
        Value::Float(f) => format!("{:?}", f64::from(*f)),
        Value::Bytes(b) => match col.bq {
            BqType::Bytes => canon::of_bytes(b),
            BqType::Float64 => match std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
            {
                Some(f) => format!("{f:?}"),
                None => String::from_utf8_lossy(b).into_owned(),
            },
            _ => canon::of_text(col, &String::from_utf8_lossy(b)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use domain::canon::of_sql;

    fn col(bq: BqType) -> Column {
        Column {
            name: domain::ident::Ident::parse("c").unwrap(),
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
            assert_eq!(of_sql(&c, &sql), canonical(&c, &my), "{bq:?}");
        }
    }
}
