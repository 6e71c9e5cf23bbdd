#!/usr/bin/env python3
"""Checks deploy/grafana/dashboard.json (run by `make test`):

1. it is a dashboard: unique panel ids, every panel inside the 24-column grid, a Prometheus
   datasource variable that every query uses;
2. every query is valid PromQL (each becomes a recording rule for `promtool check rules`);
3. every metric a query names is one the services export (its name appears in crates/).
Exit 1 with one line per problem.
"""

import json
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboard.json"
METRIC = re.compile(r"\b((?:recipe_api|partition_sync|stream_sync)_[a-z0-9_]+)")


def exported_names():
    """Metric names found in the services' sources (each is written out in full)."""
    names = set()
    for path in (ROOT / "crates").glob("*/src/**/*.rs"):
        text = path.read_text()
        names.update(METRIC.findall(text))
    return names


def main():
    problems = []
    dash = json.loads(DASHBOARD.read_text())
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    variables = [v.get("name") for v in dash.get("templating", {}).get("list", [])]
    if "datasource" not in variables:
        problems.append("no `datasource` template variable")
    exprs = []
    for p in panels:
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            problems.append(f"panel {p.get('title')!r} leaves the 24-column grid")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${datasource}":
                problems.append(f"panel {p.get('title')!r}: a query does not use ${{datasource}}")
            exprs.append((p.get("title"), t["expr"]))
    if not exprs:
        problems.append("no queries")

    names = exported_names()
    for title, expr in exprs:
        for m in METRIC.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", m)
            if m not in names and base not in names:
                problems.append(f"panel {title!r}: metric {m} is not exported by any service")

    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e} for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
    out = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    pathlib.Path(f.name).unlink()
    if out.returncode != 0:
        problems.append("promtool rejects a query:\n" + out.stdout + out.stderr)

    for p in problems:
        print(f"dashboard: {p}")
    if problems:
        sys.exit(1)
    print(f"dashboard: ok, {len(panels)} panels, {len(exprs)} queries, every metric exported")


if __name__ == "__main__":
    main()
