"""Reports of deploy/dev/bench-api.sh, from the JSON lines wrk (recipes.lua) and bench_db print.

  api_report.py round RESULTS SCENARIO ROUND            one round's line, as it ends
  api_report.py summary RESULTS PEAK_KIB ROUNDS SCENARIO...   the medians table
"""
import json
import statistics
import sys


def load(results, name):
    with open(f"{results}/{name}") as f:
        return json.loads(f.read().strip().splitlines()[-1])


def rps(r):
    return r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0


def ratio(api, db):
    return rps(api) / rps(db) if rps(db) else 0.0


def round_line(results, s, r):
    api, db = load(results, f"{s}.{r}.api.json"), load(results, f"{s}.{r}.db.json")
    print(f"   round {r}: API {rps(api):.0f} req/s (p99 {api['p99_us']/1000:.2f} ms, {api['errors']} errors) | "
          f"ceiling {rps(db):.0f} req/s | {ratio(api, db):.0%}")


def summary(results, peak_kib, rounds, scenarios):
    med = statistics.median
    print()
    print(f"medians over {rounds} alternating rounds")
    print(f"{'scenario':<15} {'API req/s':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} | {'DB req/s':>10} {'p50 ms':>7} {'p99 ms':>7} | {'API/DB':>6} {'range':>9} {'RSS MiB':>8}")
    for s in scenarios:
        api = [load(results, f"{s}.{r}.api.json") for r in range(1, rounds + 1)]
        db = [load(results, f"{s}.{r}.db.json") for r in range(1, rounds + 1)]
        rss = load(results, f"{s}.rss.json")
        ratios = [ratio(a, d) for a, d in zip(api, db)]
        print(f"{s:<15} {med(map(rps, api)):>10.0f} {med(a['p50_us'] for a in api)/1000:>7.2f} "
              f"{med(a['p99_us'] for a in api)/1000:>7.2f} {sum(a['errors'] for a in api):>6} | "
              f"{med(map(rps, db)):>10.0f} {med(d['p50_us'] for d in db)/1000:>7.2f} {med(d['p99_us'] for d in db)/1000:>7.2f} | "
              f"{med(ratios):>6.0%} {min(ratios):>4.0%}-{max(ratios):<4.0%} {rss['max_rss_kib']/1024:>8.1f}")
    print(f"peak resident memory of recipe-api over the whole run (VmHWM): {peak_kib/1024:.1f} MiB")


if __name__ == "__main__":
    if sys.argv[1] == "round":
        round_line(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        summary(sys.argv[2], int(sys.argv[3] or 0), int(sys.argv[4]), sys.argv[5:])
