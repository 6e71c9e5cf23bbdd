//! Request validation: turns a parsed JSON document into a typed input or a list of field
//! errors (`{"field": "ingredients[0].ingredient_id", "message": "..."}`). Pure functions, so
//! every rule of the contract is checked by table-driven unit tests without a server.
//!
//! Bodies are parsed into `serde_json::Value` first and checked here by hand, because serde's
//! own errors (unknown field, wrong type) name neither the full field path nor map to a 422.

use std::collections::HashSet;
use std::str::FromStr;

use bigdecimal::{BigDecimal, RoundingMode};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Limits of the contract (docs/api.md#validation). `resources.rs` repeats them as literals in
/// the OpenAPI schema annotations, which take literals only.
pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 2_000;
pub const INSTRUCTIONS_MAX: usize = 20_000;
pub const SERVINGS_RANGE: (i64, i64) = (1, 100);
pub const PREP_MINUTES_RANGE: (i64, i64) = (0, 10_080);
pub const INGREDIENTS_MAX: usize = 100;
pub const QUANTITY_MAX: f64 = 1_000_000.0;
pub const UNIT_MAX: usize = 32;
pub const INGREDIENT_NAME_MAX: usize = 100;

/// Writable fields of a recipe, in the order they are reported.
pub const RECIPE_FIELDS: &[&str] = &[
    "title",
    "description",
    "instructions",
    "servings",
    "prep_minutes",
    "ingredients",
];

/// The known fields of one kind of object in a request body (docs/api.md#representations):
/// the writable ones, and the read-only fields of its representation, accepted and ignored so
/// a client can send back (a modified copy of) what it read. Any other field is unknown.
struct Fields {
    writable: &'static [&'static str],
    read_only: &'static [&'static str],
}

impl Fields {
    fn is_known(&self, key: &str) -> bool {
        self.writable.contains(&key) || self.read_only.contains(&key)
    }
}

/// A recipe body (POST, PUT, a merge patch and the document it is merged into).
const RECIPE: Fields = Fields {
    writable: RECIPE_FIELDS,
    read_only: &["id", "version", "created_at", "updated_at"],
};
/// One entry of a recipe body's `ingredients`.
const RECIPE_INGREDIENT: Fields = Fields {
    writable: &["ingredient_id", "quantity", "unit"],
    read_only: &["name"],
};
/// An ingredient body. `nutrition` comes from the warehouse (synced), never from a client.
const INGREDIENT: Fields = Fields {
    writable: &["name"],
    read_only: &["id", "created_at", "updated_at", "nutrition"],
};

/// One violated rule, naming the field by its JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path of the offending field, e.g. `ingredients[0].ingredient_id`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated recipe body (POST, PUT, or a PATCH after merging).
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeInput {
    /// Trimmed, 1..=[`TITLE_MAX`] characters.
    pub title: String,
    pub description: Option<String>,
    pub instructions: Option<String>,
    pub servings: Option<i32>,
    pub prep_minutes: Option<i32>,
    /// In the order given, at most [`INGREDIENTS_MAX`]; `ingredient_id`s are unique.
    pub ingredients: Vec<RecipeIngredientInput>,
}

/// One entry of a recipe's ingredient list.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeIngredientInput {
    pub ingredient_id: i64,
    /// Rounded to the column's 6 decimal places.
    pub quantity: Option<BigDecimal>,
    pub unit: Option<String>,
}

/// A validated ingredient body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngredientInput {
    /// Trimmed, 1..=[`INGREDIENT_NAME_MAX`] characters.
    pub name: String,
}

fn as_object<'a>(value: &'a Value, errors: &mut Vec<FieldError>) -> Option<&'a Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        _ => {
            errors.push(FieldError::new("$", "the body must be a JSON object"));
            None
        }
    }
}

fn unknown_fields(
    map: &Map<String, Value>,
    fields: &Fields,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    for key in map.keys() {
        if !fields.is_known(key) {
            errors.push(FieldError::new(format!("{prefix}{key}"), "unknown field"));
        }
    }
}

/// The integer value of a JSON number: `4` and `4.0` alike (JSON Schema counts both as
/// integers), but not `4.5` or values beyond 64 bits.
fn as_integer(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// A required string, trimmed, with a length in characters.
fn required_trimmed(
    map: &Map<String, Value>,
    key: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match map.get(key) {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(key, "is required"));
            None
        }
        Some(Value::String(s)) => {
            let trimmed = s.trim();
            let len = trimmed.chars().count();
            if len == 0 || len > max {
                errors.push(FieldError::new(
                    key,
                    format!("must be 1 to {max} characters long after trimming"),
                ));
                None
            } else {
                Some(trimmed.to_string())
            }
        }
        Some(other) => {
            errors.push(FieldError::new(
                key,
                format!("must be a string, not {}", domain::schema::kind(other)),
            ));
            None
        }
    }
}

/// An optional (nullable) string of at most `max` characters, stored as given.
fn optional_string(
    value: Option<&Value>,
    field: &str,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            if s.chars().count() > max {
                errors.push(FieldError::new(
                    field,
                    format!("must be at most {max} characters long"),
                ));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(other) => {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be a string or null, not {}",
                    domain::schema::kind(other)
                ),
            ));
            None
        }
    }
}

/// An optional (nullable) integer within an inclusive range.
fn optional_int(
    value: Option<&Value>,
    field: &str,
    (min, max): (i64, i64),
    errors: &mut Vec<FieldError>,
) -> Option<i32> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match as_integer(n) {
            Some(i) if (min..=max).contains(&i) => i32::try_from(i).ok(),
            _ => {
                errors.push(FieldError::new(
                    field,
                    format!("must be an integer from {min} to {max}"),
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be an integer or null, not {}",
                    domain::schema::kind(other)
                ),
            ));
            None
        }
    }
}

fn quantity(
    value: Option<&Value>,
    field: &str,
    errors: &mut Vec<FieldError>,
) -> Option<BigDecimal> {
    let range_error =
        || FieldError::new(field, format!("must be a number from 0 to {QUANTITY_MAX}"));
    match value {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let in_range = n
                .as_f64()
                .is_some_and(|f| f.is_finite() && (0.0..=QUANTITY_MAX).contains(&f));
            if !in_range {
                errors.push(range_error());
                return None;
            }
            match BigDecimal::from_str(&n.to_string()) {
                Ok(d) => Some(d.with_scale_round(6, RoundingMode::HalfEven).normalized()),
                Err(_) => {
                    errors.push(range_error());
                    None
                }
            }
        }
        Some(other) => {
            errors.push(FieldError::new(
                field,
                format!(
                    "must be a number or null, not {}",
                    domain::schema::kind(other)
                ),
            ));
            None
        }
    }
}

fn recipe_ingredient(
    value: &Value,
    index: usize,
    errors: &mut Vec<FieldError>,
) -> Option<RecipeIngredientInput> {
    let prefix = format!("ingredients[{index}]");
    let Value::Object(map) = value else {
        errors.push(FieldError::new(
            &prefix,
            format!("must be an object, not {}", domain::schema::kind(value)),
        ));
        return None;
    };
    let before = errors.len();
    unknown_fields(map, &RECIPE_INGREDIENT, &format!("{prefix}."), errors);
    let id_field = format!("{prefix}.ingredient_id");
    let ingredient_id = match map.get("ingredient_id") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new(&id_field, "is required"));
            None
        }
        Some(Value::Number(n)) => match as_integer(n) {
            Some(i) if i > 0 => Some(i),
            _ => {
                errors.push(FieldError::new(
                    &id_field,
                    "must be a positive 64-bit integer",
                ));
                None
            }
        },
        Some(other) => {
            errors.push(FieldError::new(
                &id_field,
                format!("must be an integer, not {}", domain::schema::kind(other)),
            ));
            None
        }
    };
    let quantity = quantity(map.get("quantity"), &format!("{prefix}.quantity"), errors);
    let unit = optional_string(map.get("unit"), &format!("{prefix}.unit"), UNIT_MAX, errors);
    match ingredient_id {
        Some(ingredient_id) if errors.len() == before => Some(RecipeIngredientInput {
            ingredient_id,
            quantity,
            unit,
        }),
        _ => None,
    }
}

/// Validates a full recipe document (POST and PUT bodies, merged PATCH documents).
/// Missing optional fields are null; a missing `ingredients` is an empty list.
pub fn recipe_input(value: &Value) -> Result<RecipeInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(map) = as_object(value, &mut errors) else {
        return Err(errors);
    };
    unknown_fields(map, &RECIPE, "", &mut errors);
    let title = required_trimmed(map, "title", TITLE_MAX, &mut errors);
    let description = optional_string(
        map.get("description"),
        "description",
        DESCRIPTION_MAX,
        &mut errors,
    );
    let instructions = optional_string(
        map.get("instructions"),
        "instructions",
        INSTRUCTIONS_MAX,
        &mut errors,
    );
    let servings = optional_int(map.get("servings"), "servings", SERVINGS_RANGE, &mut errors);
    let prep_minutes = optional_int(
        map.get("prep_minutes"),
        "prep_minutes",
        PREP_MINUTES_RANGE,
        &mut errors,
    );
    let mut ingredients = Vec::new();
    match map.get("ingredients") {
        None => {}
        Some(Value::Array(items)) => {
            if items.len() > INGREDIENTS_MAX {
                errors.push(FieldError::new(
                    "ingredients",
                    format!("must have at most {INGREDIENTS_MAX} entries"),
                ));
            } else {
                let mut seen = HashSet::new();
                for (i, item) in items.iter().enumerate() {
                    if let Some(entry) = recipe_ingredient(item, i, &mut errors) {
                        if !seen.insert(entry.ingredient_id) {
                            errors.push(FieldError::new(
                                format!("ingredients[{i}].ingredient_id"),
                                "is listed more than once",
                            ));
                        }
                        ingredients.push(entry);
                    }
                }
            }
        }
        Some(other) => errors.push(FieldError::new(
            "ingredients",
            format!("must be an array, not {}", domain::schema::kind(other)),
        )),
    }
    match title {
        Some(title) if errors.is_empty() => Ok(RecipeInput {
            title,
            description,
            instructions,
            servings,
            prep_minutes,
            ingredients,
        }),
        _ => Err(errors),
    }
}

/// Checks the shape of a merge-patch document before it is applied: an object whose keys are
/// writable recipe fields. Values are checked after merging, by [`recipe_input`].
pub fn recipe_patch(value: &Value) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if let Some(map) = as_object(value, &mut errors) {
        unknown_fields(map, &RECIPE, "", &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Validates an ingredient body (POST and PUT).
pub fn ingredient_input(value: &Value) -> Result<IngredientInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    let Some(map) = as_object(value, &mut errors) else {
        return Err(errors);
    };
    unknown_fields(map, &INGREDIENT, "", &mut errors);
    let name = required_trimmed(map, "name", INGREDIENT_NAME_MAX, &mut errors);
    match name {
        Some(name) if errors.is_empty() => Ok(IngredientInput { name }),
        _ => Err(errors),
    }
}

/// Parses a calendar date written exactly `YYYY-MM-DD` (RFC 3339 `full-date`).
pub fn iso_date(raw: &str) -> Option<chrono::NaiveDate> {
    let b = raw.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let shaped = b.len() == 10 && b[4] == b'-' && b[7] == b'-';
    if !shaped || !digits(0..4) || !digits(5..7) || !digits(8..10) {
        return None;
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok()
}

/// Parses a path id: a positive 64-bit integer in plain decimal.
pub fn path_id(raw: &str) -> Option<i64> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(result: Result<RecipeInput, Vec<FieldError>>) -> Vec<String> {
        match result {
            Ok(_) => Vec::new(),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    /// Validates each body and compares the fields of its errors, in order, with the expected.
    fn assert_cases(cases: Vec<(&str, Value, Vec<&str>)>) {
        for (name, body, expected) in cases {
            assert_eq!(fields(recipe_input(&body)), expected, "case: {name}");
        }
    }

    fn long(n: usize) -> String {
        "x".repeat(n)
    }

    #[test]
    fn recipe_text_fields_report_the_offending_field() {
        assert_cases(vec![
            ("minimal recipe is valid", json!({"title": "Soup"}), vec![]),
            ("title is required", json!({}), vec!["title"]),
            (
                "null title is missing",
                json!({"title": null}),
                vec!["title"],
            ),
            ("blank title", json!({"title": "   "}), vec!["title"]),
            ("title of 200 chars", json!({"title": long(200)}), vec![]),
            (
                "title of 201 chars",
                json!({"title": long(201)}),
                vec!["title"],
            ),
            (
                "200 multibyte chars fit",
                json!({"title": "é".repeat(200)}),
                vec![],
            ),
            ("title of wrong type", json!({"title": 5}), vec!["title"]),
            (
                "description of 2000",
                json!({"title": "a", "description": long(2000)}),
                vec![],
            ),
            (
                "description of 2001",
                json!({"title": "a", "description": long(2001)}),
                vec!["description"],
            ),
            (
                "description null",
                json!({"title": "a", "description": null}),
                vec![],
            ),
            (
                "instructions of 20000",
                json!({"title": "a", "instructions": long(20_000)}),
                vec![],
            ),
            (
                "instructions of 20001",
                json!({"title": "a", "instructions": long(20_001)}),
                vec!["instructions"],
            ),
        ]);
    }

    #[test]
    fn recipe_number_fields_report_the_offending_field() {
        assert_cases(vec![
            (
                "servings 0",
                json!({"title": "a", "servings": 0}),
                vec!["servings"],
            ),
            ("servings 1", json!({"title": "a", "servings": 1}), vec![]),
            (
                "servings 100",
                json!({"title": "a", "servings": 100}),
                vec![],
            ),
            (
                "servings 101",
                json!({"title": "a", "servings": 101}),
                vec!["servings"],
            ),
            (
                "servings fractional",
                json!({"title": "a", "servings": 2.5}),
                vec!["servings"],
            ),
            (
                "servings string",
                json!({"title": "a", "servings": "4"}),
                vec!["servings"],
            ),
            (
                "prep_minutes -1",
                json!({"title": "a", "prep_minutes": -1}),
                vec!["prep_minutes"],
            ),
            (
                "prep_minutes 0",
                json!({"title": "a", "prep_minutes": 0}),
                vec![],
            ),
            (
                "prep_minutes 10080",
                json!({"title": "a", "prep_minutes": 10_080}),
                vec![],
            ),
            (
                "prep_minutes 10081",
                json!({"title": "a", "prep_minutes": 10_081}),
                vec!["prep_minutes"],
            ),
        ]);
    }

    #[test]
    fn recipe_ingredient_lists_report_the_offending_field() {
        let ingredients_101: Vec<Value> = (1..=101).map(|i| json!({"ingredient_id": i})).collect();
        assert_cases(vec![
            (
                "ingredients not an array",
                json!({"title": "a", "ingredients": {}}),
                vec!["ingredients"],
            ),
            (
                "ingredients null",
                json!({"title": "a", "ingredients": null}),
                vec!["ingredients"],
            ),
            (
                "101 ingredients",
                json!({"title": "a", "ingredients": ingredients_101}),
                vec!["ingredients"],
            ),
            (
                "ingredient id missing",
                json!({"title": "a", "ingredients": [{"quantity": 1}]}),
                vec!["ingredients[0].ingredient_id"],
            ),
            (
                "ingredient id zero",
                json!({"title": "a", "ingredients": [{"ingredient_id": 0}]}),
                vec!["ingredients[0].ingredient_id"],
            ),
            (
                "ingredient id string",
                json!({"title": "a", "ingredients": [{"ingredient_id": "1"}]}),
                vec!["ingredients[0].ingredient_id"],
            ),
            (
                "duplicate ingredient id",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1}, {"ingredient_id": 1}]}),
                vec!["ingredients[1].ingredient_id"],
            ),
            (
                "negative quantity",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "quantity": -0.5}]}),
                vec!["ingredients[0].quantity"],
            ),
            (
                "quantity at the maximum",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "quantity": 1_000_000}]}),
                vec![],
            ),
            (
                "quantity above the maximum",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "quantity": 1_000_000.5}]}),
                vec!["ingredients[0].quantity"],
            ),
            (
                "quantity as string",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "quantity": "2"}]}),
                vec!["ingredients[0].quantity"],
            ),
            (
                "unit of 33 chars",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "unit": long(33)}]}),
                vec!["ingredients[0].unit"],
            ),
            (
                "unknown field in an ingredient",
                json!({"title": "a", "ingredients": [{"ingredient_id": 1, "name": "flour", "grams": 2}]}),
                vec!["ingredients[0].grams"],
            ),
            (
                "ingredient entry not an object",
                json!({"title": "a", "ingredients": [7]}),
                vec!["ingredients[0]"],
            ),
        ]);
    }

    #[test]
    fn recipe_bodies_report_unknown_fields_and_every_error_at_once() {
        assert_cases(vec![
            (
                "unknown field",
                json!({"title": "a", "colour": "red"}),
                vec!["colour"],
            ),
            (
                "read-only fields are ignored",
                json!({"title": "a", "id": 3, "version": 2, "created_at": "x", "updated_at": null}),
                vec![],
            ),
            ("body not an object", json!([1, 2]), vec!["$"]),
            (
                "several errors at once",
                json!({"title": "", "servings": 0, "extra": 1}),
                vec!["extra", "title", "servings"],
            ),
        ]);
    }

    #[test]
    fn recipe_input_trims_the_title_and_rounds_quantities() {
        let input = recipe_input(&json!({
            "title": "  Pancakes ",
            "ingredients": [{"ingredient_id": 3, "quantity": 0.1234567, "unit": "g"}]
        }))
        .unwrap();
        assert_eq!(input.title, "Pancakes");
        assert_eq!(
            input.ingredients[0].quantity,
            Some(BigDecimal::from_str("0.123457").unwrap())
        );
    }

    #[test]
    fn ingredient_rules_report_the_offending_field() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"name": "flour"}), vec![]),
            (json!({"name": " "}), vec!["name"]),
            (json!({}), vec!["name"]),
            (json!({"name": "x".repeat(100)}), vec![]),
            (json!({"name": "x".repeat(101)}), vec!["name"]),
            (json!({"name": 1}), vec!["name"]),
            (json!({"name": "a", "id": 1}), vec![]),
            (json!({"name": "a", "kcal": 1}), vec!["kcal"]),
            (json!("flour"), vec!["$"]),
        ];
        for (body, expected) in cases {
            let got: Vec<String> = match ingredient_input(&body) {
                Ok(_) => vec![],
                Err(e) => e.into_iter().map(|e| e.field).collect(),
            };
            assert_eq!(got, expected, "body: {body}");
        }
    }

    #[test]
    fn patch_documents_must_name_writable_fields_only() {
        assert!(recipe_patch(&json!({"title": null, "servings": 2})).is_ok());
        assert_eq!(
            recipe_patch(&json!({"rating": 2})).unwrap_err()[0].field,
            "rating"
        );
        assert_eq!(recipe_patch(&json!(3)).unwrap_err()[0].field, "$");
    }

    #[test]
    fn dates_must_be_full_iso_dates() {
        let day = |y, m, d| chrono::NaiveDate::from_ymd_opt(y, m, d);
        let cases = [
            ("2026-01-31", day(2026, 1, 31)),
            ("2024-02-29", day(2024, 2, 29)),
            ("2026-02-29", None),
            ("2026-13-01", None),
            ("2026-1-1", None),
            ("2026-01-1 ", None),
            ("+2026-01-01", None),
            ("20260101", None),
            ("2026-01-01T00:00:00Z", None),
            ("", None),
            ("yesterday", None),
        ];
        for (raw, want) in cases {
            assert_eq!(iso_date(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn path_ids_must_be_positive_64_bit_integers() {
        let cases = [
            ("1", Some(1)),
            ("42", Some(42)),
            ("9223372036854775807", Some(i64::MAX)),
            ("9223372036854775808", None),
            ("0", None),
            ("-1", None),
            ("+1", None),
            ("1.0", None),
            ("abc", None),
            ("", None),
            (" 1", None),
        ];
        for (raw, expected) in cases {
            assert_eq!(path_id(raw), expected, "raw: {raw:?}");
        }
    }
}
