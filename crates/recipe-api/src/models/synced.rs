//! Reads of the tables the warehouse sync owns: `recipe_daily_stats` (partition-sync) and
//! `ingredient_nutrition` (stream-sync). recipe-api never creates, migrates or writes them; the
//! sync creates them from the warehouse schema on its first run. Until then they are absent,
//! and a read answers as if they were empty (no stats, no nutrition) rather than failing.

use std::collections::HashMap;

use chrono::{NaiveDate, NaiveDateTime};
use diesel::mysql::MysqlConnection;
use diesel::prelude::*;
use diesel::result::Error as DieselError;

use crate::error::{classify, DbErrorClass};
use crate::resources::{DailyStats, Nutrition};

diesel::table! {
    /// Created by partition-sync from the warehouse table (docs/sync.md#type-map,
    /// docs/api.md#synced-data); not ours.
    recipe_daily_stats (recipe_id, day) {
        recipe_id -> Bigint,
        day -> Date,
        views -> Nullable<Bigint>,
        cooks -> Nullable<Bigint>,
        avg_rating -> Nullable<Double>,
        updated_at -> Nullable<Datetime>,
    }
}

diesel::table! {
    /// Created by stream-sync (plus its `_sync_hash` / `_sync_bucket` columns); not ours.
    ingredient_nutrition (ingredient_id) {
        ingredient_id -> Bigint,
        calories -> Nullable<Double>,
        protein_g -> Nullable<Double>,
        fat_g -> Nullable<Double>,
        carbs_g -> Nullable<Double>,
    }
}

/// True when `error` says a table does not exist (MySQL/MariaDB error 1146,
/// `ER_NO_SUCH_TABLE`), as the service's one classification of database errors decides.
pub fn is_missing_table(error: &DieselError) -> bool {
    classify(error) == DbErrorClass::MissingTable
}

/// `Ok(default)` where the table is absent (not synced yet), the result otherwise.
fn or_absent<T>(result: QueryResult<T>, default: impl FnOnce() -> T) -> QueryResult<T> {
    match result {
        Err(error) if is_missing_table(&error) => Ok(default()),
        other => other,
    }
}

/// One row of `recipe_daily_stats`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = recipe_daily_stats, check_for_backend(diesel::mysql::Mysql))]
pub struct DailyStatsRow {
    pub day: NaiveDate,
    pub views: Option<i64>,
    pub cooks: Option<i64>,
    pub avg_rating: Option<f64>,
    pub updated_at: Option<NaiveDateTime>,
}

impl From<DailyStatsRow> for DailyStats {
    fn from(row: DailyStatsRow) -> DailyStats {
        DailyStats {
            day: row.day,
            views: row.views,
            cooks: row.cooks,
            avg_rating: row.avg_rating,
            updated_at: row.updated_at,
        }
    }
}

/// A recipe's daily rows with `from <= day <= to` (open where a bound is `None`), by day.
/// Empty while the table is absent.
pub fn daily_stats(
    conn: &mut MysqlConnection,
    recipe_id: i64,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> QueryResult<Vec<DailyStatsRow>> {
    let mut query = recipe_daily_stats::table
        .filter(recipe_daily_stats::recipe_id.eq(recipe_id))
        .order(recipe_daily_stats::day.asc())
        .select(DailyStatsRow::as_select())
        .into_boxed();
    if let Some(from) = from {
        query = query.filter(recipe_daily_stats::day.ge(from));
    }
    if let Some(to) = to {
        query = query.filter(recipe_daily_stats::day.le(to));
    }
    or_absent(query.load(conn), Vec::new)
}

/// One row of `ingredient_nutrition`.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ingredient_nutrition, check_for_backend(diesel::mysql::Mysql))]
pub struct NutritionRow {
    pub ingredient_id: i64,
    pub calories: Option<f64>,
    pub protein_g: Option<f64>,
    pub fat_g: Option<f64>,
    pub carbs_g: Option<f64>,
}

/// Nutrition of those of `ids` that have a synced row, in one query. Empty while the table is
/// absent.
pub fn nutrition(conn: &mut MysqlConnection, ids: &[i64]) -> QueryResult<HashMap<i64, Nutrition>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = ingredient_nutrition::table
        .filter(ingredient_nutrition::ingredient_id.eq_any(ids))
        .select(NutritionRow::as_select())
        .load(conn);
    let rows = or_absent(rows, Vec::new)?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.ingredient_id,
                Nutrition {
                    calories: r.calories,
                    protein_g: r.protein_g,
                    fat_g: r.fat_g,
                    carbs_g: r.carbs_g,
                },
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind};

    use super::*;

    struct Info(&'static str);

    impl DatabaseErrorInformation for Info {
        fn message(&self) -> &str {
            self.0
        }
        fn details(&self) -> Option<&str> {
            None
        }
        fn hint(&self) -> Option<&str> {
            None
        }
        fn table_name(&self) -> Option<&str> {
            None
        }
        fn column_name(&self) -> Option<&str> {
            None
        }
        fn constraint_name(&self) -> Option<&str> {
            None
        }
        fn statement_position(&self) -> Option<i32> {
            None
        }
    }

    fn db_error(message: &'static str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(Info(message)))
    }

    #[test]
    fn only_a_missing_table_reads_as_absent() {
        assert!(is_missing_table(&db_error(
            "Table 'recipes.ingredient_nutrition' doesn't exist"
        )));
        assert!(!is_missing_table(&db_error(
            "Unknown column 'calories' in 'field list'"
        )));
        assert!(!is_missing_table(&DieselError::NotFound));
        assert_eq!(
            or_absent(Err(db_error("Table 'd.t' doesn't exist")), || 7).ok(),
            Some(7)
        );
        assert!(or_absent::<i32>(Err(db_error("Lost connection")), || 7).is_err());
    }
}
