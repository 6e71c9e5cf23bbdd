//! Diesel table definitions matching `migrations/2026-11-26-000001_create_recipes/up.sql`.
//! `ingredients.name_key` is a generated column: it is selectable but no insert or changeset
//! struct names it.

diesel::table! {
    ingredients (id) {
        id -> Bigint,
        #[max_length = 100]
        name -> Varchar,
        #[max_length = 100]
        name_key -> Nullable<Varchar>,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    recipes (id) {
        id -> Bigint,
        #[max_length = 200]
        title -> Varchar,
        description -> Nullable<Text>,
        instructions -> Nullable<Text>,
        servings -> Nullable<Integer>,
        prep_minutes -> Nullable<Integer>,
        version -> Bigint,
        created_at -> Datetime,
        updated_at -> Datetime,
    }
}

diesel::table! {
    recipe_ingredients (recipe_id, ingredient_id) {
        recipe_id -> Bigint,
        ingredient_id -> Bigint,
        quantity -> Nullable<Numeric>,
        #[max_length = 32]
        unit -> Nullable<Varchar>,
        position -> Integer,
    }
}

diesel::joinable!(recipe_ingredients -> ingredients (ingredient_id));
diesel::joinable!(recipe_ingredients -> recipes (recipe_id));

diesel::allow_tables_to_appear_in_same_query!(ingredients, recipes, recipe_ingredients);

// `migrations/2026-12-02-000003_create_idempotency_keys/up.sql`.
diesel::table! {
    idempotency_keys (principal, idem_key) {
        #[max_length = 32]
        principal -> Binary,
        #[max_length = 255]
        idem_key -> Varchar,
        #[max_length = 32]
        request_hash -> Binary,
        status -> Nullable<Smallint>,
        #[max_length = 255]
        location -> Nullable<Varchar>,
        #[max_length = 64]
        etag -> Nullable<Varchar>,
        body -> Nullable<Blob>,
        created_at -> Datetime,
        expires_at -> Datetime,
    }
}
