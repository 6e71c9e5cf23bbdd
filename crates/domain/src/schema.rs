//! Warehouse → MySQL type mapping (docs/sync.md#type-map): BigQuery column types, the MySQL column each
//! becomes, the canonical form each is exported in, the conversion of exported values into
//! MySQL values with checks that name the column, DDL for missing targets and schema-drift
//! detection for existing ones. Pure functions only.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::ident::{quote as quote_ident, Ident};

/// A BigQuery column type as far as the sync cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BqType {
    Int64,
    Float64,
    Numeric,
    BigNumeric,
    Bool,
    String,
    Bytes,
    Date,
    Datetime,
    Timestamp,
    Time,
    /// JSON, ARRAY and STRUCT/RECORD: stored as MySQL JSON.
    Json,
    Geography,
}

impl BqType {
    /// Parses the type name of a table schema (legacy and standard names) and its mode.
    pub fn parse(type_name: &str, mode: Option<&str>) -> Result<BqType, String> {
        if mode.is_some_and(|m| m.eq_ignore_ascii_case("REPEATED")) {
            return Ok(BqType::Json);
        }
        Ok(match type_name.to_ascii_uppercase().as_str() {
            "INTEGER" | "INT64" => BqType::Int64,
            "FLOAT" | "FLOAT64" => BqType::Float64,
            "NUMERIC" => BqType::Numeric,
            "BIGNUMERIC" => BqType::BigNumeric,
            "BOOLEAN" | "BOOL" => BqType::Bool,
            "STRING" => BqType::String,
            "BYTES" => BqType::Bytes,
            "DATE" => BqType::Date,
            "DATETIME" => BqType::Datetime,
            "TIMESTAMP" => BqType::Timestamp,
            "TIME" => BqType::Time,
            "JSON" | "RECORD" | "STRUCT" => BqType::Json,
            "GEOGRAPHY" => BqType::Geography,
            other => return Err(format!("unsupported BigQuery type {other}")),
        })
    }
}

/// One column of a synced table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Ident,
    pub bq: BqType,
    /// `REQUIRED` in the warehouse: `NOT NULL` in MySQL.
    pub required: bool,
    /// `VARCHAR(n)` for a STRING column, when configured.
    pub varchar: Option<u32>,
}

impl Column {
    /// The MySQL column type (docs/sync.md#type-map).
    pub fn mysql_type(&self) -> String {
        match self.bq {
            BqType::Int64 => "BIGINT".into(),
            BqType::Float64 => "DOUBLE".into(),
            BqType::Numeric => "DECIMAL(38,9)".into(),
            BqType::BigNumeric => "DECIMAL(65,30)".into(),
            BqType::Bool => "TINYINT(1)".into(),
            BqType::String => match self.varchar {
                Some(n) => format!("VARCHAR({n})"),
                None => "LONGTEXT".into(),
            },
            BqType::Bytes => "LONGBLOB".into(),
            BqType::Date => "DATE".into(),
            BqType::Datetime | BqType::Timestamp => "DATETIME(6)".into(),
            BqType::Time => "TIME(6)".into(),
            BqType::Json => "JSON".into(),
            BqType::Geography => "LONGTEXT".into(),
        }
    }

    /// The column definition in `CREATE TABLE`; strings in `collation`, the server's exact
    /// collation ([`EXACT_COLLATIONS`]).
    pub fn mysql_definition(&self, collation: &str) -> String {
        let charset = match self.bq {
            BqType::String | BqType::Geography => {
                format!(" CHARACTER SET utf8mb4 COLLATE {collation}")
            }
            _ => String::new(),
        };
        let null = if self.required { " NOT NULL" } else { " NULL" };
        format!(
            "{} {}{charset}{null}",
            self.name.quoted(),
            self.mysql_type()
        )
    }

    /// The expression that exports this column in a canonical, format-independent form
    /// (the same from the emulator and from BigQuery, JSON or Parquet): timestamps and
    /// datetimes as microseconds (a datetime as if UTC: BigQuery's `FORMAT_DATETIME('%Y')`
    /// does not pad years below 1000, which MySQL would then read as two-digit years), bytes
    /// as base64, decimals as strings.
    pub fn export_expr(&self, source_expr: &str) -> String {
        let c = source_expr;
        let name = self.name.quoted();
        match self.bq {
            BqType::Int64 | BqType::Float64 | BqType::Bool | BqType::String | BqType::Date => {
                format!("{c} AS {name}")
            }
            BqType::Numeric | BqType::BigNumeric => format!("CAST({c} AS STRING) AS {name}"),
            BqType::Bytes => format!("TO_BASE64({c}) AS {name}"),
            BqType::Datetime => format!("UNIX_MICROS(TIMESTAMP({c})) AS {name}"),
            BqType::Timestamp => format!("UNIX_MICROS({c}) AS {name}"),
            BqType::Time => format!("FORMAT_TIME('%H:%M:%E6S', {c}) AS {name}"),
            BqType::Json => format!("TO_JSON_STRING({c}) AS {name}"),
            BqType::Geography => format!("ST_ASTEXT({c}) AS {name}"),
        }
    }

    /// Whether an existing MySQL column (`information_schema.COLUMNS.DATA_TYPE`, lower case)
    /// can hold this column. MariaDB reports JSON as `longtext`.
    pub fn accepts_mysql_type(&self, data_type: &str) -> bool {
        let t = data_type.to_ascii_lowercase();
        match self.bq {
            BqType::Int64 => t == "bigint",
            BqType::Float64 => t == "double",
            BqType::Numeric | BqType::BigNumeric => t == "decimal",
            BqType::Bool => t == "tinyint",
            BqType::String | BqType::Geography => {
                matches!(
                    t.as_str(),
                    "varchar" | "char" | "text" | "mediumtext" | "longtext" | "tinytext"
                )
            }
            BqType::Bytes => matches!(
                t.as_str(),
                "longblob" | "mediumblob" | "blob" | "varbinary" | "binary"
            ),
            BqType::Date => t == "date",
            BqType::Datetime | BqType::Timestamp => t == "datetime" || t == "timestamp",
            BqType::Time => t == "time",
            BqType::Json => t == "json" || t == "longtext",
        }
    }
}

/// A column of a warehouse table as the warehouse describes it (the adapter fills this from
/// the client's schema type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarehouseField {
    pub name: String,
    /// The type name, e.g. `INTEGER`, `STRING`, `TIMESTAMP`.
    pub type_name: String,
    /// `NULLABLE`, `REQUIRED` or `REPEATED`.
    pub mode: Option<String>,
}

impl WarehouseField {
    pub fn new(name: &str, type_name: &str, mode: Option<&str>) -> WarehouseField {
        WarehouseField {
            name: name.to_string(),
            type_name: type_name.to_string(),
            mode: mode.map(str::to_string),
        }
    }
}

/// The sync's columns of a BigQuery table schema, with configured `VARCHAR` lengths.
/// Errors name the column whose type is not supported or whose name is not a safe
/// identifier, and a `varchar` entry that names no column (a typo would otherwise be ignored).
pub fn columns_from_schema(
    fields: &[WarehouseField],
    varchar: &std::collections::BTreeMap<Ident, u32>,
) -> Result<Vec<Column>, String> {
    let columns = fields
        .iter()
        .map(|f| {
            let name = Ident::parse(&f.name).map_err(|e| format!("column name {e}"))?;
            let bq = BqType::parse(&f.type_name, f.mode.as_deref())
                .map_err(|e| format!("column {}: {e}", f.name))?;
            Ok(Column {
                name,
                bq,
                required: f
                    .mode
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case("REQUIRED")),
                varchar: varchar.get(f.name.as_str()).copied(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if let Some(name) = varchar
        .keys()
        .find(|n| !columns.iter().any(|c| &c.name == *n))
    {
        return Err(format!(
            "varchar configured for `{name}`, which the warehouse table does not have"
        ));
    }
    Ok(columns)
}

/// A MySQL value ready to bind: text, bytes, integer, double or NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Double(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// Converts one exported JSON cell to the MySQL value of `col`, checking what MySQL would
/// otherwise truncate or reject. The error says what is wrong with the value (the caller adds
/// table, partition and key); it never includes the value itself for long strings.
pub fn convert(col: &Column, v: &serde_json::Value) -> Result<SqlValue, String> {
    if v.is_null() {
        return if col.required {
            Err("NULL in a NOT NULL column".into())
        } else {
            Ok(SqlValue::Null)
        };
    }
    match col.bq {
        BqType::Int64 => convert_int(v),
        BqType::Float64 => convert_float(v),
        BqType::Numeric => convert_decimal(v, 29, 9),
        BqType::BigNumeric => convert_decimal(v, 35, 30),
        BqType::Bool => convert_bool(v),
        BqType::String | BqType::Geography => convert_string(v, col.varchar),
        BqType::Bytes => base64::engine::general_purpose::STANDARD
            .decode(json_text(v).as_bytes())
            .map(SqlValue::Bytes)
            .map_err(|e| format!("bytes are not base64: {e}")),
        BqType::Datetime => convert_datetime(v),
        BqType::Date | BqType::Time => Ok(SqlValue::Text(json_text(v))),
        BqType::Timestamp => convert_timestamp(v),
        BqType::Json => Ok(SqlValue::Text(json_text(v))),
    }
}

/// A scalar's text: a string as it is, anything else as JSON.
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn convert_int(v: &serde_json::Value) -> Result<SqlValue, String> {
    use serde_json::Value as J;
    match v {
        J::Number(n) => n
            .as_i64()
            .map(SqlValue::Int)
            .ok_or_else(|| format!("{n} is not a 64-bit integer")),
        J::String(s) => s
            .parse::<i64>()
            .map(SqlValue::Int)
            .map_err(|_| format!("`{}` is not a 64-bit integer", short(s))),
        other => Err(format!("expected an integer, got {}", kind(other))),
    }
}

fn convert_float(v: &serde_json::Value) -> Result<SqlValue, String> {
    use serde_json::Value as J;
    let f = match v {
        J::Number(n) => n.as_f64().ok_or("not a number")?,
        J::String(s) => s
            .parse::<f64>()
            .map_err(|_| format!("`{}` is not a number", short(s)))?,
        other => return Err(format!("expected a number, got {}", kind(other))),
    };
    if f.is_finite() {
        Ok(SqlValue::Double(f))
    } else {
        Err(format!("{f} cannot be stored in MySQL DOUBLE"))
    }
}

fn convert_decimal(
    v: &serde_json::Value,
    int_max: usize,
    frac_max: usize,
) -> Result<SqlValue, String> {
    let s = json_text(v);
    check_decimal(&s, int_max, frac_max)?;
    Ok(SqlValue::Text(s))
}

fn convert_bool(v: &serde_json::Value) -> Result<SqlValue, String> {
    use serde_json::Value as J;
    match v {
        J::Bool(b) => Ok(SqlValue::Int(i64::from(*b))),
        J::String(s) if s == "true" || s == "false" => Ok(SqlValue::Int(i64::from(s == "true"))),
        other => Err(format!("expected a boolean, got {}", kind(other))),
    }
}

fn convert_string(v: &serde_json::Value, varchar: Option<u32>) -> Result<SqlValue, String> {
    let s = json_text(v);
    if let Some(n) = varchar {
        let len = s.chars().count();
        if len > n as usize {
            return Err(format!(
                "string of {len} characters is longer than VARCHAR({n})"
            ));
        }
    }
    Ok(SqlValue::Text(s))
}

/// Exported timestamps are integer microseconds (`UNIX_MICROS`), as a number or a string.
fn convert_timestamp(v: &serde_json::Value) -> Result<SqlValue, String> {
    use serde_json::Value as J;
    let micros = match v {
        J::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a timestamp in microseconds"))?,
        J::String(s) => s
            .parse::<i64>()
            .map_err(|_| format!("`{}` is not a timestamp in microseconds", short(s)))?,
        other => return Err(format!("expected a timestamp, got {}", kind(other))),
    };
    let ts = DateTime::<Utc>::from_timestamp_micros(micros).ok_or("timestamp out of range")?;
    Ok(SqlValue::Text(
        ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
    ))
}

/// Exported datetimes are microseconds since 1970-01-01 00:00 (`UNIX_MICROS(TIMESTAMP(c))`);
/// a datetime already written as text is taken as is.
fn convert_datetime(v: &serde_json::Value) -> Result<SqlValue, String> {
    match v {
        serde_json::Value::String(s) if s.parse::<i64>().is_err() => Ok(SqlValue::Text(s.clone())),
        _ => convert_timestamp(v),
    }
}

/// What kind of JSON value `v` is, for error messages ("a string", "null", ...).
pub fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Checks that a decimal string fits `DECIMAL(int_max + frac_max, frac_max)`.
pub fn check_decimal(s: &str, int_max: usize, frac_max: usize) -> Result<(), String> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if int.is_empty()
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("`{}` is not a decimal number", short(s)));
    }
    let int_digits = int.trim_start_matches('0').len();
    let frac_digits = frac.trim_end_matches('0').len();
    if int_digits > int_max || frac_digits > frac_max {
        return Err(format!(
            "{} does not fit DECIMAL({},{frac_max})",
            short(s),
            int_max + frac_max
        ));
    }
    Ok(())
}

/// Binary, NO PAD collations: strings compare as the exact byte sequences BigQuery compares,
/// so `'a'`, `'a '` and `'A'` are three keys (docs/sync.md#type-map). MariaDB (10.2+) calls
/// it `utf8mb4_nopad_bin`, MySQL (8.0.17+) `utf8mb4_0900_bin`. `utf8mb4_bin` is PAD SPACE on
/// both: `'a' = 'a '`, so two warehouse keys would collide in a unique key.
pub const EXACT_COLLATIONS: [&str; 2] = ["utf8mb4_nopad_bin", "utf8mb4_0900_bin"];

/// Whether a MySQL collation compares strings exactly (binary and NO PAD).
pub fn is_exact_collation(collation: &str) -> bool {
    let c = collation.to_ascii_lowercase();
    c == "binary" || c.ends_with("_nopad_bin") || c.ends_with("_0900_bin")
}

/// Key columns of an existing table whose collation pads spaces or folds case.
fn padded_keys<'a>(
    primary_key: &'a [Ident],
    have: &'a [MysqlColumn],
) -> impl Iterator<Item = &'a MysqlColumn> {
    primary_key
        .iter()
        .filter_map(|k| have.iter().find(|c| c.name.eq_ignore_ascii_case(k)))
        .filter(|c| {
            c.collation
                .as_deref()
                .is_some_and(|co| !is_exact_collation(co))
        })
}

/// The names of [`padded_keys`].
pub fn padded_key_columns(primary_key: &[Ident], have: &[MysqlColumn]) -> Vec<String> {
    padded_keys(primary_key, have)
        .map(|c| c.name.clone())
        .collect()
}

/// Key columns of an existing table whose collation would let distinct warehouse keys collide
/// (one message per column, with the fix).
pub fn key_collation_problems(
    table: &str,
    primary_key: &[Ident],
    have: &[MysqlColumn],
) -> Vec<String> {
    padded_keys(primary_key, have)
        .map(|c| {
            format!(
                "{table}.{}: key column has collation {}, which ignores trailing spaces (or case): \
                 distinct warehouse keys such as 'a' and 'a ' would collide; change it, e.g. \
                 ALTER TABLE `{table}` MODIFY `{}` VARCHAR(n) CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin \
                 (MySQL 8: utf8mb4_0900_bin)",
                c.name,
                c.collation.as_deref().unwrap_or_default(),
                c.name
            )
        })
        .collect()
}

/// An existing table's unique keys (PRIMARY and UNIQUE), each with its columns in order.
pub type UniqueKeys = [(String, Vec<String>)];

/// Why an existing (adopted) table can't be kept in sync by key: stream-sync upserts match
/// rows by the table's unique keys, so one of them must be exactly `primary_key` (in any
/// order). Without it (an auto-increment surrogate key, say) every update would insert a
/// second row.
pub fn unique_key_problem(table: &str, primary_key: &[Ident], keys: &UniqueKeys) -> Option<String> {
    let want: std::collections::BTreeSet<String> =
        primary_key.iter().map(|k| k.to_ascii_lowercase()).collect();
    let matches = keys.iter().any(|(_, cols)| {
        cols.iter()
            .map(|c| c.to_ascii_lowercase())
            .collect::<std::collections::BTreeSet<_>>()
            == want
    });
    if matches {
        return None;
    }
    let pk: Vec<&str> = primary_key.iter().map(Ident::as_str).collect();
    let have: Vec<String> = keys
        .iter()
        .map(|(name, cols)| format!("{name} ({})", cols.join(", ")))
        .collect();
    Some(format!(
        "{table}: no PRIMARY or UNIQUE key is exactly the configured primary_key ({pk}); its unique keys are [{have}]. \
         Rows are matched by key, so every update would insert another row. Add one, e.g. \
         ALTER TABLE `{table}` ADD UNIQUE KEY ({cols})",
        pk = pk.join(", "),
        have = have.join("; "),
        cols = primary_key.iter().map(Ident::quoted).collect::<Vec<_>>().join(", ")
    ))
}

/// `CREATE TABLE` for a missing target: the columns, the primary key, an index on the
/// partition column. utf8mb4 in `collation` (one of [`EXACT_COLLATIONS`]), InnoDB.
pub fn create_table_sql(
    table: &Ident,
    columns: &[Column],
    primary_key: &[Ident],
    index: Option<&Ident>,
    collation: &str,
) -> Result<String, String> {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| c.mysql_definition(collation))
        .collect();
    for k in primary_key {
        let col = columns
            .iter()
            .find(|c| &c.name == k)
            .ok_or_else(|| format!("primary key column `{k}` is not in the warehouse table"))?;
        if matches!(col.bq, BqType::String | BqType::Geography) && col.varchar.is_none() {
            return Err(format!(
                "primary key column `{k}` is a STRING: configure its length under varchar"
            ));
        }
        if matches!(col.bq, BqType::Bytes | BqType::Json) {
            return Err(format!(
                "primary key column `{k}` has type {:?}, which MySQL cannot index",
                col.bq
            ));
        }
    }
    if !primary_key.is_empty() {
        let pk: Vec<&str> = primary_key.iter().map(Ident::quoted).collect();
        parts.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    }
    if let Some(ix) = index {
        if primary_key.first() != Some(ix) {
            parts.push(format!(
                "KEY {} ({})",
                quote_ident(&format!("{ix}_idx")),
                ix.quoted()
            ));
        }
    }
    Ok(format!(
        "CREATE TABLE {} (\n  {}\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
        table.quoted(),
        parts.join(",\n  ")
    ))
}

/// An existing MySQL column (from `information_schema.COLUMNS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlColumn {
    pub name: String,
    pub data_type: String,
    pub nullable: bool,
    pub has_default: bool,
    /// `COLLATION_NAME` (strings only).
    pub collation: Option<String>,
}

/// Differences that stop a load, one message per column. Extra MySQL columns are fine when
/// they are nullable or have a default (e.g. stream-sync's `_sync_hash`).
pub fn schema_drift(table: &str, want: &[Column], have: &[MysqlColumn]) -> Vec<String> {
    let mut out = Vec::new();
    for c in want {
        match have.iter().find(|h| h.name.eq_ignore_ascii_case(&c.name)) {
            None => out.push(format!(
                "{table}.{}: missing in MySQL (warehouse type {:?})",
                c.name, c.bq
            )),
            Some(h) if !c.accepts_mysql_type(&h.data_type) => out.push(format!(
                "{table}.{}: MySQL type {} cannot hold warehouse type {:?} (expected {})",
                c.name,
                h.data_type,
                c.bq,
                c.mysql_type()
            )),
            Some(_) => {}
        }
    }
    for h in have {
        if !want.iter().any(|c| c.name.eq_ignore_ascii_case(&h.name))
            && !h.nullable
            && !h.has_default
        {
            out.push(format!(
                "{table}.{}: NOT NULL in MySQL without a default, but not in the warehouse",
                h.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(bq: BqType) -> Column {
        Column {
            name: crate::ident::Ident::parse("c").unwrap(),
            bq,
            required: false,
            varchar: None,
        }
    }

    #[test]
    fn datetimes_export_as_microseconds_and_keep_four_digit_years() {
        let c = col(BqType::Datetime);
        assert_eq!(c.export_expr("`c`"), "UNIX_MICROS(TIMESTAMP(`c`)) AS `c`");
        let text = |v| match convert(&c, &v) {
            Ok(SqlValue::Text(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            text(json!(-62135596799500000i64)),
            "0001-01-01 00:00:00.500000"
        );
        assert_eq!(
            text(json!("253402300799999999")),
            "9999-12-31 23:59:59.999999"
        );
        // Text as it was exported before: taken as is.
        assert_eq!(
            text(json!("2026-01-01 10:00:00.5")),
            "2026-01-01 10:00:00.5"
        );
        assert!(convert(&c, &json!(true)).is_err());
    }

    #[test]
    fn floats_read_from_json_keep_every_bit() {
        // serde_json's default float parser can be 1 ULP off on 16-17 digit values (its
        // `float_roundtrip` feature is on in the workspace): staged NDJSON must give MySQL
        // the warehouse's exact double.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut off = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let f = f64::from_bits(x >> 2) % 1e6;
            if !f.is_finite() {
                continue;
            }
            let text = format!("{{\"v\": {f:?}}}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            match convert_float(&v["v"]) {
                Ok(SqlValue::Double(got)) if got.to_bits() == f.to_bits() => {}
                other => off.push((f, other)),
            }
        }
        assert!(
            off.is_empty(),
            "{} of 20000 differ, e.g. {:?}",
            off.len(),
            off.first()
        );
    }

    #[test]
    fn type_map_follows_the_design() {
        let cases = [
            ("INTEGER", BqType::Int64, "BIGINT"),
            ("FLOAT", BqType::Float64, "DOUBLE"),
            ("NUMERIC", BqType::Numeric, "DECIMAL(38,9)"),
            ("BIGNUMERIC", BqType::BigNumeric, "DECIMAL(65,30)"),
            ("BOOLEAN", BqType::Bool, "TINYINT(1)"),
            ("STRING", BqType::String, "LONGTEXT"),
            ("BYTES", BqType::Bytes, "LONGBLOB"),
            ("DATE", BqType::Date, "DATE"),
            ("DATETIME", BqType::Datetime, "DATETIME(6)"),
            ("TIMESTAMP", BqType::Timestamp, "DATETIME(6)"),
            ("TIME", BqType::Time, "TIME(6)"),
            ("JSON", BqType::Json, "JSON"),
            ("RECORD", BqType::Json, "JSON"),
            ("GEOGRAPHY", BqType::Geography, "LONGTEXT"),
        ];
        for (name, bq, mysql) in cases {
            assert_eq!(BqType::parse(name, None).unwrap(), bq, "{name}");
            assert_eq!(col(bq).mysql_type(), mysql, "{name}");
        }
        assert_eq!(
            BqType::parse("INT64", Some("REPEATED")).unwrap(),
            BqType::Json
        );
        assert!(BqType::parse("INTERVAL", None).is_err());
        let s = Column {
            varchar: Some(200),
            ..col(BqType::String)
        };
        assert_eq!(s.mysql_type(), "VARCHAR(200)");
    }

    #[test]
    fn values_convert_and_bad_values_are_named() {
        assert_eq!(
            convert(&col(BqType::Int64), &json!("-9223372036854775808")).unwrap(),
            SqlValue::Int(i64::MIN)
        );
        assert!(convert(&col(BqType::Int64), &json!("9223372036854775808")).is_err());
        assert_eq!(
            convert(&col(BqType::Timestamp), &json!(1767261600123456i64)).unwrap(),
            SqlValue::Text("2026-01-01 10:00:00.123456".into())
        );
        assert_eq!(
            convert(&col(BqType::Bytes), &json!("AAEC")).unwrap(),
            SqlValue::Bytes(vec![0, 1, 2])
        );
        assert_eq!(
            convert(&col(BqType::Bool), &json!(true)).unwrap(),
            SqlValue::Int(1)
        );
        assert!(convert(&col(BqType::Float64), &json!("NaN")).is_err());
        let req = Column {
            required: true,
            ..col(BqType::Int64)
        };
        assert!(convert(&req, &json!(null))
            .unwrap_err()
            .contains("NOT NULL"));
        let short = Column {
            varchar: Some(3),
            ..col(BqType::String)
        };
        assert!(convert(&short, &json!("äöü")).is_ok());
        assert!(convert(&short, &json!("abcd"))
            .unwrap_err()
            .contains("VARCHAR(3)"));
        assert!(convert(
            &col(BqType::Numeric),
            &json!("123456789012345678901234567890.5")
        )
        .unwrap_err()
        .contains("DECIMAL(38,9)"));
        assert!(convert(&col(BqType::Numeric), &json!("-12.345000000")).is_ok());
        assert!(check_decimal("1e5", 29, 9).is_err());
    }

    #[test]
    fn schema_columns_reject_bad_names_and_stray_varchar_entries() {
        let fields = vec![
            WarehouseField::new("id", "INTEGER", None),
            WarehouseField::new("name", "STRING", Some("NULLABLE")),
        ];
        let mut varchar = std::collections::BTreeMap::new();
        varchar.insert(Ident::parse("name").unwrap(), 20);
        let cols = columns_from_schema(&fields, &varchar).unwrap();
        assert_eq!(cols[1].varchar, Some(20));
        varchar.insert(Ident::parse("nmae").unwrap(), 20);
        assert!(columns_from_schema(&fields, &varchar)
            .unwrap_err()
            .contains("`nmae`"));
        let bad = vec![WarehouseField::new("a b", "INTEGER", None)];
        assert!(columns_from_schema(&bad, &Default::default())
            .unwrap_err()
            .contains("`a b`"));
    }

    #[test]
    fn ddl_quotes_names_and_rejects_unindexable_keys() {
        let cols = vec![
            Column {
                name: crate::ident::Ident::parse("id").unwrap(),
                bq: BqType::Int64,
                required: true,
                varchar: None,
            },
            Column {
                name: crate::ident::Ident::parse("day").unwrap(),
                bq: BqType::Date,
                required: false,
                varchar: None,
            },
            Column {
                name: crate::ident::Ident::parse("name").unwrap(),
                bq: BqType::String,
                required: false,
                varchar: None,
            },
        ];
        let id = |s: &str| Ident::parse(s).unwrap();
        let sql = create_table_sql(
            &id("t"),
            &cols,
            &[id("id")],
            Some(&id("day")),
            "utf8mb4_nopad_bin",
        )
        .unwrap();
        assert!(sql.contains("`id` BIGINT NOT NULL"), "{sql}");
        assert!(sql.contains("PRIMARY KEY (`id`)"), "{sql}");
        assert!(sql.contains("KEY `day_idx` (`day`)"), "{sql}");
        assert!(
            create_table_sql(&id("t"), &cols, &[id("name")], None, "utf8mb4_nopad_bin")
                .unwrap_err()
                .contains("varchar")
        );
        assert!(create_table_sql(&id("t"), &cols, &[id("zz")], None, "utf8mb4_nopad_bin").is_err());
    }

    #[test]
    fn keys_need_an_exact_collation_and_created_tables_use_one() {
        for exact in [
            "utf8mb4_nopad_bin",
            "utf8mb4_0900_bin",
            "binary",
            "UTF8MB4_NOPAD_BIN",
        ] {
            assert!(is_exact_collation(exact), "{exact}");
        }
        for padded in [
            "utf8mb4_bin",
            "utf8mb4_unicode_ci",
            "utf8mb4_general_ci",
            "latin1_bin",
        ] {
            assert!(!is_exact_collation(padded), "{padded}");
        }
        let col = |name: &str, collation: Option<&str>| MysqlColumn {
            name: name.into(),
            data_type: "varchar".into(),
            nullable: false,
            has_default: false,
            collation: collation.map(str::to_string),
        };
        let have = [
            col("id", Some("utf8mb4_bin")),
            col("sku", Some("utf8mb4_nopad_bin")),
            col("note", Some("utf8mb4_unicode_ci")),
            col("n", None),
        ];
        let id = |s: &str| Ident::parse(s).unwrap();
        let problems = key_collation_problems("t", &[id("id"), id("sku"), id("n")], &have);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("t.id: key column has collation utf8mb4_bin"));
        assert!(problems[0].contains("utf8mb4_nopad_bin"));
        let cols = vec![Column {
            name: id("k"),
            bq: BqType::String,
            required: true,
            varchar: Some(10),
        }];
        let sql = create_table_sql(&id("t"), &cols, &[id("k")], None, "utf8mb4_0900_bin").unwrap();
        assert!(
            sql.contains("`k` VARCHAR(10) CHARACTER SET utf8mb4 COLLATE utf8mb4_0900_bin NOT NULL"),
            "{sql}"
        );
        assert!(sql.ends_with("COLLATE=utf8mb4_0900_bin"), "{sql}");
    }

    #[test]
    fn an_adopted_table_needs_a_unique_key_that_is_the_primary_key() {
        let id = |s: &str| Ident::parse(s).unwrap();
        let key = |name: &str, cols: &[&str]| {
            (
                name.to_string(),
                cols.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            )
        };
        let pk = [id("region"), id("day")];
        assert!(unique_key_problem("t", &pk, &[key("PRIMARY", &["day", "REGION"])]).is_none());
        assert!(unique_key_problem(
            "t",
            &pk,
            &[key("PRIMARY", &["id"]), key("natural", &["region", "day"])]
        )
        .is_none());
        let p = unique_key_problem("t", &pk, &[key("PRIMARY", &["id"])]).unwrap();
        assert!(
            p.contains("primary_key (region, day)") && p.contains("PRIMARY (id)"),
            "{p}"
        );
        assert!(p.contains("ADD UNIQUE KEY (`region`, `day`)"), "{p}");
        // A unique key on more columns does not identify a row by the configured key.
        assert!(unique_key_problem("t", &pk, &[key("wide", &["region", "day", "x"])]).is_some());
    }

    #[test]
    fn drift_names_each_column() {
        let want = vec![
            Column {
                name: crate::ident::Ident::parse("id").unwrap(),
                bq: BqType::Int64,
                required: true,
                varchar: None,
            },
            Column {
                name: crate::ident::Ident::parse("v").unwrap(),
                bq: BqType::Float64,
                required: false,
                varchar: None,
            },
            Column {
                name: crate::ident::Ident::parse("gone").unwrap(),
                bq: BqType::Date,
                required: false,
                varchar: None,
            },
        ];
        let have = vec![
            MysqlColumn {
                name: "id".into(),
                data_type: "bigint".into(),
                nullable: false,
                has_default: false,
                collation: None,
            },
            MysqlColumn {
                name: "v".into(),
                data_type: "varchar".into(),
                nullable: true,
                has_default: false,
                collation: None,
            },
            MysqlColumn {
                name: "extra".into(),
                data_type: "int".into(),
                nullable: false,
                has_default: false,
                collation: None,
            },
            MysqlColumn {
                name: "_sync_hash".into(),
                data_type: "bigint".into(),
                nullable: true,
                has_default: false,
                collation: None,
            },
        ];
        let d = schema_drift("t", &want, &have);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d.iter().any(|m| m.starts_with("t.v:")));
        assert!(d.iter().any(|m| m.starts_with("t.gone:")));
        assert!(d.iter().any(|m| m.starts_with("t.extra:")));
    }
}
