DROP TABLE recipe_ingredients;
DROP TABLE recipes;
DROP TABLE ingredients;
