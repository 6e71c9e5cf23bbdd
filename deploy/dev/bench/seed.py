"""Writes SQL seeding the benchmark database to stdout: 500 ingredients, 10,000 recipes with
8 distinct ingredients each. Deterministic (fixed seed)."""
import random
import sys

RECIPES = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
INGREDIENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
PER_RECIPE = 8
BATCH = 1000
TS = "'2026-11-01 12:00:00.000000'"
rng = random.Random(20261126)
out = sys.stdout
out.write("SET autocommit=0;\n")


def batched(rows, head):
    for i in range(0, len(rows), BATCH):
        out.write(head + ",\n".join(rows[i:i + BATCH]) + ";\n")


batched([f"({i}, 'ingredient {i:04d}', {TS}, {TS})" for i in range(1, INGREDIENTS + 1)],
        "INSERT INTO ingredients (id, name, created_at, updated_at) VALUES\n")
instructions = "Mix everything, rest for ten minutes, then cook until golden. " * 4
batched([f"({i}, 'Recipe {i}', 'A benchmark recipe', '{instructions}', {rng.randint(1, 12)}, "
         f"{rng.randint(5, 180)}, 1, {TS}, {TS})" for i in range(1, RECIPES + 1)],
        "INSERT INTO recipes (id, title, description, instructions, servings, prep_minutes, version, created_at, updated_at) VALUES\n")
links = []
for r in range(1, RECIPES + 1):
    for pos, ing in enumerate(rng.sample(range(1, INGREDIENTS + 1), PER_RECIPE)):
        links.append(f"({r}, {ing}, {rng.randint(1, 1000)}.5, 'g', {pos})")
batched(links, "INSERT INTO recipe_ingredients (recipe_id, ingredient_id, quantity, unit, position) VALUES\n")
out.write("COMMIT;\n")
