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
