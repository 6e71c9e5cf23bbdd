//! Database ceiling for `make bench-api`: runs the same diesel code (hence the same SQL) that
//! an endpoint runs, directly against MySQL from N threads with a connection each, for a fixed
//! time, and prints one JSON line: operations per second, p50 and p99 latency in microseconds.
//!
//! Usage: `bench_db <database_url> <by-id|by-ingredient|write-mix> <concurrency> <seconds>
//! <recipes> <ingredients>`.

use std::time::{Duration, Instant};

use anyhow::Context;
use diesel::mysql::MysqlConnection;
use diesel::Connection;
use recipe_api::models::recipes as model;
use recipe_api::routes::recipes::{create, merge_patch, recipe_page, replace};
use recipe_api::validation;
use serde_json::json;

/// xorshift64*: enough randomness for picking ids, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `1..=max`.
    fn id(&mut self, max: i64) -> i64 {
        i64::try_from(self.next() % max.max(1).unsigned_abs()).unwrap_or(0) + 1
    }
}

fn recipe_body(rng: &mut Rng, ingredients: i64) -> serde_json::Value {
    let mut ids: Vec<i64> = Vec::new();
    while ids.len() < 8 {
        let id = rng.id(ingredients);
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    json!({
        "title": format!("Bench recipe {}", rng.next() % 100_000),
        "description": "Written by the benchmark",
        "servings": 4,
        "ingredients": ids.iter().map(|id| json!({"ingredient_id": id, "quantity": 125.5, "unit": "g"})).collect::<Vec<_>>(),
    })
}

fn one_op(
    conn: &mut MysqlConnection,
    scenario: &str,
    rng: &mut Rng,
    recipes: i64,
    ingredients: i64,
) -> anyhow::Result<()> {
    match scenario {
        "by-id" => {
            model::load(conn, rng.id(recipes))?;
        }
        "by-ingredient" => {
            recipe_page(conn, 0, 20, Some(rng.id(ingredients)))?;
        }
        "write-mix" | "write-mix-keyed" => {
            let roll = rng.next() % 100;
            let id = rng.id(recipes);
            let result = if roll < 50 {
                merge_patch(conn, id, None, &json!({"servings": 1 + rng.next() % 100})).map(|_| ())
            } else {
                let input = validation::recipe_input(&recipe_body(rng, ingredients))
                    .map_err(|e| anyhow::anyhow!("invalid generated body: {e:?}"))?;
                if roll < 75 {
                    create(conn, &input).map(|_| ())
                } else {
                    replace(conn, id, None, &input).map(|_| ())
                }
            };
            result.map_err(|e| anyhow::anyhow!("write failed: {e}"))?;
        }
        other => anyhow::bail!("unknown scenario {other}"),
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 7,
        "usage: bench_db <url> <scenario> <concurrency> <seconds> <recipes> <ingredients>"
    );
    let url = args[1].clone();
    let scenario = args[2].clone();
    let concurrency: usize = args[3].parse().context("concurrency")?;
    let seconds: u64 = args[4].parse().context("seconds")?;
    let recipes: i64 = args[5].parse().context("recipes")?;
    let ingredients: i64 = args[6].parse().context("ingredients")?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let handles: Vec<_> = (0..concurrency)
        .map(|i| {
            let (url, scenario) = (url.clone(), scenario.clone());
            std::thread::spawn(move || -> anyhow::Result<(Vec<u32>, u64)> {
                let mut conn = MysqlConnection::establish(&url).context("connect")?;
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
                let mut latencies = Vec::with_capacity(100_000);
                let mut errors = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if one_op(&mut conn, &scenario, &mut rng, recipes, ingredients).is_err() {
                        errors += 1;
                    }
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                Ok((latencies, errors))
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for handle in handles {
        let (latencies, errs) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("worker panicked"))??;
        all.extend(latencies);
        errors += errs;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        json!({"requests": all.len(), "duration_us": (elapsed * 1e6) as u64, "p50_us": pct(0.50), "p99_us": pct(0.99), "errors": errors})
    );
    Ok(())
}
