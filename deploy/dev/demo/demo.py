#!/usr/bin/env python3
"""The demo dataset: deterministic, generated here, seeded into the BigQuery emulator (REST,
stdlib only) and into recipe-api's own MySQL tables; the demo sync config; the demo change.

  demo.py seed-warehouse   (re)create dataset tables and rows in the warehouse
  demo.py api-sql          print SQL that seeds recipe-api's recipes/ingredients (same ids)
  demo.py seed-api         run that SQL with the `mariadb` client against $DATABASE_URL
  demo.py config           print the sync config (TOML) for partition-sync and stream-sync
  demo.py change           change the warehouse: one stats partition, nutrition rows updated
                           and deleted (what the next sync carries to the API)

Service URLs default to the environment written by `deploy/dev/env.sh up` (.dev/env).
Warehouse tables:
  recipe_daily_stats        DAY-partitioned on `day`: 90 days x every recipe
  ingredient_nutrition      not partitioned: per 100 g (one ingredient has none on purpose)
  catalog_recipes, catalog_ingredients, catalog_recipe_ingredients
                            the linked catalogue group, partitioned on `published_on`
"""

import argparse
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# --- the data -------------------------------------------------------------------------------

# id, name, category, (kcal, protein g, fat g, carbohydrates g) per 100 g or None (not synced)
INGREDIENTS = [
    (1, "flour", "baking", (364.0, 10.3, 1.0, 76.3)),
    (2, "sugar", "baking", (387.0, 0.0, 0.0, 100.0)),
    (3, "butter", "dairy", (717.0, 0.9, 81.1, 0.1)),
    (4, "egg", "dairy", (143.0, 12.6, 9.5, 0.7)),
    (5, "milk", "dairy", (61.0, 3.2, 3.3, 4.8)),
    (6, "salt", "spice", (0.0, 0.0, 0.0, 0.0)),
    (7, "olive oil", "oil", (884.0, 0.0, 100.0, 0.0)),
    (8, "garlic", "vegetable", (149.0, 6.4, 0.5, 33.1)),
    (9, "onion", "vegetable", (40.0, 1.1, 0.1, 9.3)),
    (10, "tomato", "vegetable", (18.0, 0.9, 0.2, 3.9)),
    (11, "basil", "herb", (23.0, 3.2, 0.6, 2.7)),
    (12, "spaghetti", "pasta", (371.0, 13.0, 1.5, 75.0)),
    (13, "parmesan", "dairy", (431.0, 38.0, 29.0, 4.1)),
    (14, "chicken breast", "meat", (165.0, 31.0, 3.6, 0.0)),
    (15, "rice", "grain", (365.0, 7.1, 0.7, 80.0)),
    (16, "carrot", "vegetable", (41.0, 0.9, 0.2, 9.6)),
    (17, "potato", "vegetable", (77.0, 2.0, 0.1, 17.0)),
    (18, "lemon", "fruit", (29.0, 1.1, 0.3, 9.3)),
    (19, "chickpeas", "legume", (364.0, 19.0, 6.0, 61.0)),
    (20, "tahini", "paste", (595.0, 17.0, 54.0, 21.0)),
    (21, "coconut milk", "dairy-free", (230.0, 2.3, 24.0, 6.0)),
    (22, "curry paste", "paste", None),
    (23, "ground beef", "meat", (254.0, 17.0, 20.0, 0.0)),
    (24, "black beans", "legume", (341.0, 21.6, 1.4, 62.4)),
    (25, "avocado", "fruit", (160.0, 2.0, 14.7, 8.5)),
    (26, "lime", "fruit", (30.0, 0.7, 0.2, 10.5)),
    (27, "oats", "grain", (389.0, 16.9, 6.9, 66.3)),
    (28, "banana", "fruit", (89.0, 1.1, 0.3, 22.8)),
    (29, "cocoa powder", "baking", (228.0, 19.6, 13.7, 57.9)),
    (30, "ginger", "spice", (80.0, 1.8, 0.8, 17.8)),
]

# id, title, description, servings, prep minutes, cuisine, [(ingredient id, quantity, unit)]
RECIPES = [
    (1, "Pancakes", "Fluffy breakfast pancakes", 4, 20, "american",
     [(1, 200, "g"), (5, 300, "ml"), (4, 2, "pcs"), (2, 20, "g"), (3, 30, "g"), (6, 2, "g")]),
    (2, "Spaghetti al pomodoro", "Tomato, garlic and basil", 4, 25, "italian",
     [(12, 400, "g"), (10, 500, "g"), (8, 10, "g"), (7, 30, "ml"), (11, 10, "g"), (13, 40, "g"), (6, 5, "g")]),
    (3, "Hummus", "Creamy chickpea dip", 6, 15, "levantine",
     [(19, 250, "g"), (20, 60, "g"), (18, 40, "ml"), (8, 6, "g"), (7, 30, "ml"), (6, 4, "g")]),
    (4, "Chicken curry", "Coconut curry with rice", 4, 45, "thai",
     [(14, 500, "g"), (21, 400, "ml"), (22, 50, "g"), (9, 150, "g"), (8, 10, "g"), (30, 15, "g"), (15, 300, "g")]),
    (5, "Beef chili", "Slow-cooked chili con carne", 6, 90, "tex-mex",
     [(23, 500, "g"), (24, 400, "g"), (10, 400, "g"), (9, 150, "g"), (8, 10, "g"), (6, 5, "g")]),
    (6, "Guacamole", "Avocado, lime and onion", 4, 10, "mexican",
     [(25, 400, "g"), (26, 30, "ml"), (9, 50, "g"), (10, 100, "g"), (6, 3, "g")]),
    (7, "Banana oat cookies", "Three-ingredient cookies", 12, 25, "american",
     [(27, 150, "g"), (28, 200, "g"), (29, 20, "g")]),
    (8, "Lemon garlic chicken", "Roasted with potatoes", 4, 60, "mediterranean",
     [(14, 600, "g"), (18, 60, "ml"), (8, 15, "g"), (7, 30, "ml"), (17, 600, "g")]),
    (9, "Tomato basil soup", "Smooth and bright", 4, 35, "italian",
     [(10, 800, "g"), (9, 150, "g"), (8, 10, "g"), (11, 15, "g"), (3, 30, "g"), (5, 100, "ml")]),
    (10, "Vegetable fried rice", "Day-old rice, wok-fried", 3, 20, "chinese",
     [(15, 300, "g"), (4, 2, "pcs"), (16, 100, "g"), (9, 100, "g"), (8, 8, "g"), (30, 10, "g"), (7, 20, "ml")]),
    (11, "Chocolate banana porridge", "A warm breakfast bowl", 1, 10, "british",
     [(27, 80, "g"), (5, 250, "ml"), (28, 120, "g"), (29, 10, "g"), (2, 10, "g")]),
    (12, "Roast potatoes", "Crisp outside, fluffy inside", 6, 70, "british",
     [(17, 1000, "g"), (7, 50, "ml"), (8, 20, "g"), (6, 8, "g")]),
]

FIRST_DAY = dt.date(2026, 1, 1)
DAYS = 90  # 2026-01-01 .. 2026-03-31
CATALOG_EDITION = "2026-01-01"
SEED_TIME = "2026-01-01 00:00:00"
# Rows `change` modifies: the last stats partition, two nutrition rows updated, two deleted.
CHANGED_DAY = (FIRST_DAY + dt.timedelta(days=DAYS - 1)).isoformat()
UPDATED_NUTRITION = (1, 2)
DELETED_NUTRITION = (29, 30)


def daily_stats():
    """Every (recipe, day) row; the same values on every machine and every run."""
    rng = random.Random(20260101)
    rows = []
    for recipe in RECIPES:
        recipe_id = recipe[0]
        popularity = rng.randint(200, 2000)
        for i in range(DAYS):
            day = FIRST_DAY + dt.timedelta(days=i)
            weekend = 1.35 if day.weekday() >= 5 else 1.0
            trend = 1.0 + i / (DAYS * 2)
            views = int(popularity * weekend * trend * rng.uniform(0.7, 1.3))
            cooks = int(views * rng.uniform(0.04, 0.15))
            rating = round(rng.uniform(3.4, 5.0), 2) if cooks > 0 else None
            rows.append({
                "recipe_id": recipe_id,
                "day": day.isoformat(),
                "views": views,
                "cooks": cooks,
                "avg_rating": rating,
                "updated_at": (day + dt.timedelta(days=1)).isoformat() + "T03:00:00Z",
            })
    return rows


def nutrition_rows():
    return [
        {"ingredient_id": i, "calories": n[0], "protein_g": n[1], "fat_g": n[2], "carbs_g": n[3]}
        for i, _, _, n in INGREDIENTS if n is not None
    ]


def field(name, kind, required=False):
    return {"name": name, "type": kind, "mode": "REQUIRED" if required else "NULLABLE"}


TABLES = {
    "recipe_daily_stats": {
        "schema": [field("recipe_id", "INT64", True), field("day", "DATE", True),
                   field("views", "INT64"), field("cooks", "INT64"),
                   field("avg_rating", "FLOAT64"), field("updated_at", "TIMESTAMP")],
        "partition": "day",
        "rows": daily_stats,
    },
    "ingredient_nutrition": {
        "schema": [field("ingredient_id", "INT64", True), field("calories", "FLOAT64"),
                   field("protein_g", "FLOAT64"), field("fat_g", "FLOAT64"),
                   field("carbs_g", "FLOAT64")],
        "partition": None,
        "rows": nutrition_rows,
    },
    "catalog_recipes": {
        "schema": [field("recipe_id", "INT64", True), field("title", "STRING", True),
                   field("cuisine", "STRING"), field("published_on", "DATE", True)],
        "partition": "published_on",
        "rows": lambda: [{"recipe_id": r[0], "title": r[1], "cuisine": r[5],
                          "published_on": CATALOG_EDITION} for r in RECIPES],
    },
    "catalog_ingredients": {
        "schema": [field("ingredient_id", "INT64", True), field("name", "STRING", True),
                   field("category", "STRING"), field("published_on", "DATE", True)],
        "partition": "published_on",
        "rows": lambda: [{"ingredient_id": i[0], "name": i[1], "category": i[2],
                          "published_on": CATALOG_EDITION} for i in INGREDIENTS],
    },
    "catalog_recipe_ingredients": {
        "schema": [field("recipe_id", "INT64", True), field("ingredient_id", "INT64", True),
                   field("quantity", "FLOAT64"), field("unit", "STRING"),
                   field("published_on", "DATE", True)],
        "partition": "published_on",
        "rows": lambda: [{"recipe_id": r[0], "ingredient_id": ing, "quantity": float(q),
                          "unit": u, "published_on": CATALOG_EDITION}
                         for r in RECIPES for ing, q, u in r[6]],
    },
}

# --- the BigQuery emulator's REST API -------------------------------------------------------


class Warehouse:
    def __init__(self, url, project, dataset):
        self.url = url.rstrip("/")
        self.project = project
        self.dataset = dataset

    def call(self, method, path, body=None, ok_missing=False):
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(5):
            req = urllib.request.Request(
                f"{self.url}/projects/{self.project}{path}", data=data, method=method,
                headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    text = resp.read()
                    out = json.loads(text) if text else {}
                    if out.get("errors") or out.get("insertErrors"):
                        raise SystemExit(f"warehouse {method} {path}: {out}")
                    return out
            except urllib.error.HTTPError as e:
                if e.code == 404 and ok_missing:
                    return None
                if e.code == 409 and ok_missing:
                    return None
                # After a 500 the emulator may fail the next request once: retry.
                if e.code >= 500 and attempt < 4:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise SystemExit(f"warehouse {method} {path}: HTTP {e.code} {e.read()[:500]!r}")
            except urllib.error.URLError as e:
                raise SystemExit(f"warehouse at {self.url} is not reachable ({e.reason}): "
                                 "start it with `deploy/dev/env.sh up`")
        raise SystemExit("unreachable")

    def query(self, sql):
        out = self.call("POST", "/queries", {"query": sql, "useLegacySql": False,
                                             "timeoutMs": 60000})
        job = out.get("jobReference", {}).get("jobId")
        rows = out.get("rows", [])
        fields = [f["name"] for f in out.get("schema", {}).get("fields", [])]
        token = out.get("pageToken")
        while (not out.get("jobComplete", True)) or token:
            params = urllib.parse.urlencode({k: v for k, v in
                                             (("pageToken", token), ("timeoutMs", 60000)) if v})
            out = self.call("GET", f"/queries/{job}?{params}")
            rows += out.get("rows", [])
            fields = fields or [f["name"] for f in out.get("schema", {}).get("fields", [])]
            token = out.get("pageToken")
        return [dict(zip(fields, (c.get("v") for c in r["f"]))) for r in rows]

    def ensure_dataset(self):
        self.call("POST", "/datasets", {"datasetReference": {
            "projectId": self.project, "datasetId": self.dataset}}, ok_missing=True)

    def recreate_table(self, name, spec):
        self.call("DELETE", f"/datasets/{self.dataset}/tables/{name}", ok_missing=True)
        table = {"tableReference": {"projectId": self.project, "datasetId": self.dataset,
                                    "tableId": name},
                 "schema": {"fields": spec["schema"]}}
        if spec["partition"]:
            table["timePartitioning"] = {"type": "DAY", "field": spec["partition"]}
        self.call("POST", f"/datasets/{self.dataset}/tables", table)

    def insert(self, name, rows):
        for start in range(0, len(rows), 500):
            chunk = rows[start:start + 500]
            self.call("POST", f"/datasets/{self.dataset}/tables/{name}/insertAll",
                      {"rows": [{"json": r} for r in chunk]})


def warehouse(args):
    return Warehouse(args.bigquery_url, args.project, args.dataset)


# --- commands ---------------------------------------------------------------------------------


def seed_warehouse(args):
    wh = warehouse(args)
    wh.ensure_dataset()
    for name, spec in TABLES.items():
        rows = spec["rows"]()
        wh.recreate_table(name, spec)
        wh.insert(name, rows)
        print(f"  warehouse {args.dataset}.{name}: {len(rows)} rows", file=sys.stderr)


def sql_str(value):
    if value is None:
        return "NULL"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "''") + "'"


def api_sql():
    """Idempotent: a second run restores the demo rows (ids and names fixed) and keeps the rest."""
    out = ["SET time_zone = '+00:00';", "START TRANSACTION;"]
    values = ",\n  ".join(f"({i}, {sql_str(n)}, '{SEED_TIME}', '{SEED_TIME}')"
                          for i, n, _, _ in INGREDIENTS)
    out.append("INSERT INTO ingredients (id, name, created_at, updated_at) VALUES\n  "
               f"{values}\nON DUPLICATE KEY UPDATE name = VALUES(name);")
    values = ",\n  ".join(
        f"({r[0]}, {sql_str(r[1])}, {sql_str(r[2])}, NULL, {r[3]}, {r[4]}, 1, "
        f"'{SEED_TIME}', '{SEED_TIME}')" for r in RECIPES)
    out.append("INSERT INTO recipes (id, title, description, instructions, servings, "
               "prep_minutes, version, created_at, updated_at) VALUES\n  "
               f"{values}\nON DUPLICATE KEY UPDATE title = VALUES(title), "
               "description = VALUES(description), servings = VALUES(servings), "
               "prep_minutes = VALUES(prep_minutes), version = version + 1, "
               "updated_at = VALUES(updated_at);")
    ids = ", ".join(str(r[0]) for r in RECIPES)
    out.append(f"DELETE FROM recipe_ingredients WHERE recipe_id IN ({ids});")
    values = ",\n  ".join(f"({r[0]}, {ing}, {q}, {sql_str(u)}, {pos})"
                          for r in RECIPES for pos, (ing, q, u) in enumerate(r[6]))
    out.append("INSERT INTO recipe_ingredients (recipe_id, ingredient_id, quantity, unit, "
               f"position) VALUES\n  {values};")
    out.append("COMMIT;")
    return "\n".join(out) + "\n"


def seed_api(args):
    url = urllib.parse.urlparse(args.database_url)
    cmd = ["mariadb", "--protocol=tcp", "-h", url.hostname or "127.0.0.1",
           "-P", str(url.port or 3306), "-u", urllib.parse.unquote(url.username or ""),
           url.path.lstrip("/")]
    env = dict(os.environ, MYSQL_PWD=urllib.parse.unquote(url.password or ""))
    subprocess.run(cmd, input=api_sql().encode(), env=env, check=True)
    print(f"  recipe-api: {len(RECIPES)} recipes, {len(INGREDIENTS)} ingredients", file=sys.stderr)


def config(args):
    staging_root = args.export_root
    listen = f'listen = "{args.metrics_listen}"\n' if args.metrics_listen else ""
    push = f'pushgateway = "{args.pushgateway}"\n' if args.pushgateway else ""
    print(f"""# The demo sync config, generated by deploy/dev/demo/demo.py config.
# partition-sync: recipe_daily_stats (by day) and the catalogue group (one transaction).
# stream-sync: ingredient_nutrition (bucketed row-hash diff).
[mysql]
url_env = "{args.url_env}"

[warehouse]
project = "{args.project}"
dataset = "{args.dataset}"
endpoint = "{args.bigquery_url}"
credentials = "none"
# change_detection: the default, "metadata" (partition last_modified_time), as in production.

[staging]
uri = "gs://{args.bucket}/exports"
local_root = "{staging_root}"

[metrics]
{push}{listen}
[stream_sync]
interval_secs = {args.interval}
buckets = 64

[[tables]]
source = "recipe_daily_stats"
target = "recipe_daily_stats"
mode = "partition"
partition_column = "day"
primary_key = ["recipe_id", "day"]
group = "stats"

[[tables]]
source = "catalog_recipes"
target = "catalog_recipes"
mode = "partition"
partition_column = "published_on"
primary_key = ["recipe_id", "published_on"]
group = "catalog"
varchar = {{ title = 200, cuisine = 50 }}

[[tables]]
source = "catalog_ingredients"
target = "catalog_ingredients"
mode = "partition"
partition_column = "published_on"
primary_key = ["ingredient_id", "published_on"]
group = "catalog"
varchar = {{ name = 100, category = 50 }}

[[tables]]
source = "catalog_recipe_ingredients"
target = "catalog_recipe_ingredients"
mode = "partition"
partition_column = "published_on"
primary_key = ["recipe_id", "ingredient_id", "published_on"]
group = "catalog"
depends_on = ["catalog_recipes", "catalog_ingredients"]
varchar = {{ unit = 32 }}

[[tables]]
source = "ingredient_nutrition"
target = "ingredient_nutrition"
mode = "stream"
primary_key = ["ingredient_id"]
""")


def change(args):
    wh = warehouse(args)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    ds = args.dataset
    wh.query(f"UPDATE `{ds}.recipe_daily_stats` SET views = views + 1000, cooks = cooks + 100, "
             f"updated_at = TIMESTAMP '{now}+00' WHERE day = DATE '{CHANGED_DAY}'")
    ids = ", ".join(map(str, UPDATED_NUTRITION))
    wh.query(f"UPDATE `{ds}.ingredient_nutrition` SET calories = calories + 10, "
             f"protein_g = protein_g + 0.5 WHERE ingredient_id IN ({ids})")
    ids = ", ".join(map(str, DELETED_NUTRITION))
    wh.query(f"DELETE FROM `{ds}.ingredient_nutrition` WHERE ingredient_id IN ({ids})")
    print(f"changed the warehouse ({ds}):\n"
          f"  recipe_daily_stats: partition {CHANGED_DAY}: views +1000, cooks +100 for every recipe\n"
          f"  ingredient_nutrition: ingredients {', '.join(map(str, UPDATED_NUTRITION))}: "
          "calories +10, protein_g +0.5\n"
          f"  ingredient_nutrition: ingredients {', '.join(map(str, DELETED_NUTRITION))} deleted")


def main():
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bigquery-url", default=env.get("BIGQUERY_URL", "http://127.0.0.1:9050/bigquery/v2"))
    p.add_argument("--project", default=env.get("BIGQUERY_PROJECT", "local-project"))
    p.add_argument("--dataset", default=env.get("DEMO_DATASET", "demo"))
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("seed-warehouse")
    sub.add_parser("api-sql")
    s = sub.add_parser("seed-api")
    s.add_argument("--database-url", default=env.get("DATABASE_URL"))
    c = sub.add_parser("config")
    c.add_argument("--url-env", default="SYNC_MYSQL_URL")
    c.add_argument("--bucket", default="demo-staging")
    c.add_argument("--export-root", default=env.get("BIGQUERY_EXPORT_ROOT", ".dev/gcs-local"))
    c.add_argument("--pushgateway", default=env.get("PUSHGATEWAY_URL"))
    c.add_argument("--metrics-listen", default="127.0.0.1:9464")
    c.add_argument("--interval", type=int, default=5)
    sub.add_parser("change")
    args = p.parse_args()
    if args.command == "seed-warehouse":
        seed_warehouse(args)
    elif args.command == "api-sql":
        sys.stdout.write(api_sql())
    elif args.command == "seed-api":
        if not args.database_url:
            raise SystemExit("DATABASE_URL is not set: run `deploy/dev/env.sh up` first")
        seed_api(args)
    elif args.command == "config":
        config(args)
    elif args.command == "change":
        change(args)


if __name__ == "__main__":
    main()
