//! Every type of the type map (docs/sync.md#type-map) that the emulator has (no GEOGRAPHY there, and BIGNUMERIC tables
//! can't be created in it) round-trips with NULLs, unicode and extreme values.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{ok, table, Fixture};
use gcp_bigquery_client::model::field_type::FieldType;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use serde_json::json;

fn field(name: &str, t: FieldType, mode: &str) -> TableFieldSchema {
    let mut f = TableFieldSchema::new(name, t);
    f.mode = Some(mode.to_string());
    f
}

#[tokio::test]
async fn every_type_round_trips_with_nulls_unicode_and_extreme_values() {
    let f = Fixture::new().await;
    let mut st = field("st", FieldType::Record, "NULLABLE");
    st.fields = Some(vec![
        field("a", FieldType::Integer, "NULLABLE"),
        field("b", FieldType::String, "NULLABLE"),
    ]);
    let schema = TableSchema::new(vec![
        field("id", FieldType::Integer, "REQUIRED"),
        field("i", FieldType::Integer, "NULLABLE"),
        field("f", FieldType::Float, "NULLABLE"),
        field("n", FieldType::Numeric, "NULLABLE"),
        field("b", FieldType::Boolean, "NULLABLE"),
        field("s", FieldType::String, "NULLABLE"),
        field("bt", FieldType::Bytes, "NULLABLE"),
        field("d", FieldType::Date, "NULLABLE"),
        field("dt", FieldType::Datetime, "NULLABLE"),
        field("ts", FieldType::Timestamp, "NULLABLE"),
        field("tm", FieldType::Time, "NULLABLE"),
        field("j", FieldType::Json, "NULLABLE"),
        field("arr", FieldType::Integer, "REPEATED"),
        st,
    ]);
    f.ds.client
        .table()
        .create(Table::new(&f.ds.project, &f.ds.dataset, "types", schema))
        .await
        .expect("create table");
    let rows = [
        json!({"id": 1, "i": "-9223372036854775808", "f": 1.7976931348623157e308,
               "n": "99999999999999999999999999999.999999999", "b": true,
               "s": "héllo ✓ 𝄞 ' \" \\ 日本", "bt": "AP8=", "d": "1000-01-01",
               "dt": "9999-12-31 23:59:59.999999", "ts": "1970-01-01 00:00:00.000001 UTC",
               "tm": "23:59:59.999999", "j": "{\"a\":[1,null,\"x\"]}", "arr": [1, 2, 3],
               "st": {"a": 5, "b": "ü"}}),
        json!({"id": 2, "arr": []}),
        json!({"id": 3, "i": "9223372036854775807", "f": -5e-324, "n": "-0.000000001",
               "b": false, "s": "", "bt": "", "d": "9999-12-31", "dt": "1000-01-01 00:00:00",
               "ts": "2099-12-31 23:59:59.999999 UTC", "tm": "00:00:00", "j": "[]",
               "st": {"a": null, "b": null}}),
        // The first year (BigQuery's FORMAT_DATETIME('%Y') writes it as `1`, which MySQL would
        // read as 2001) and a random double that a best-effort JSON parser rounds 1 ULP off.
        json!({"id": 4, "f": 4.055474706295447e-187, "d": "0001-01-01",
               "dt": "0001-01-01 00:00:00.5", "ts": "0001-01-01 00:00:00 UTC"}),
    ];
    let mut insert = TableDataInsertAllRequest::new();
    for r in rows {
        insert.add_row(None, r).unwrap();
    }
    let resp =
        f.ds.client
            .tabledata()
            .insert_all(&f.ds.project, &f.ds.dataset, "types", insert)
            .await
            .expect("insertAll");
    assert!(resp.insert_errors.unwrap_or_default().is_empty());

    let config = f.config(&table("types", &["id"], ""), "");
    let out = f.sync(&config).await;
    assert_eq!(ok(&out, "types").upserted, 4);

    let got = f.my_rows(
        "SELECT id, i, f, n, b, s, HEX(bt), d, dt, ts, tm, j, arr, st FROM types ORDER BY id",
    );
    assert_eq!(
        got[0],
        vec![
            "1",
            "-9223372036854775808",
            "1.7976931348623157e308",
            "99999999999999999999999999999.999999999",
            "1",
            "héllo ✓ 𝄞 ' \" \\ 日本",
            "00FF",
            "1000-01-01",
            "9999-12-31 23:59:59.999999",
            "1970-01-01 00:00:00.000001",
            "23:59:59.999999",
            "{\"a\":[1,null,\"x\"]}",
            "[1,2,3]",
            "{\"a\":5,\"b\":\"ü\"}",
        ]
    );
    let nulls: Vec<&str> = got[1].iter().map(String::as_str).collect();
    assert_eq!(nulls[0], "2");
    assert!(nulls[1..12].iter().all(|v| *v == "NULL"), "{nulls:?}");
    assert_eq!(
        got[2],
        vec![
            "3",
            "9223372036854775807",
            "-5e-324",
            "-0.000000001",
            "0",
            "",
            "",
            "9999-12-31",
            "1000-01-01 00:00:00.000000",
            "2099-12-31 23:59:59.999999",
            "00:00:00.000000",
            "[]",
            "NULL",
            "{\"a\":null,\"b\":null}",
        ]
    );
    assert_eq!(
        got[3][..10],
        [
            "4",
            "NULL",
            "4.055474706295447e-187",
            "NULL",
            "NULL",
            "NULL",
            "NULL",
            "0001-01-01",
            "0001-01-01 00:00:00.500000",
            "0001-01-01 00:00:00.000000",
        ]
    );
    let types = f.my_rows(
        "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'types' ORDER BY ORDINAL_POSITION",
    );
    let ty = |c: &str| types.iter().find(|r| r[0] == c).unwrap()[1].clone();
    assert_eq!(ty("id"), "bigint(20)");
    assert_eq!(ty("n"), "decimal(38,9)");
    assert_eq!(ty("ts"), "datetime(6)");
    assert_eq!(ty("bt"), "longblob");
    assert_eq!(ty("_sync_bucket"), "smallint(5) unsigned");

    // Values compare equal column by column, and a second cycle finds nothing to do.
    f.assert_in_sync(&config).await;
    let again = f.sync(&config).await;
    let r = ok(&again, "types");
    assert_eq!((r.buckets_differing, r.rows_written()), (0, 0));
}
