#!/usr/bin/env python3
"""Checks a gridroute-loadtest --html page in a real headless browser (Chromium): the page is
loaded and its DOM, as the browser built it, must hold every chart with lines that carry the
run's numbers, and the figures table must show the same percentiles as the run's --json.

usage: check_page.py PAGE.html RUN.json [--baseline]
"""
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("check_page: no Chromium on PATH; run `make setup-test` (apt-get install chromium)")


class Dom(HTMLParser):
    def __init__(self):
        super().__init__()
        self.svgs, self.lines, self.cells = {}, [], []
        self.svg = None
        self.row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "id" in a:
            self.svg = a["id"]
            self.svgs[self.svg] = []
        elif tag == "polyline" and self.svg:
            self.svgs[self.svg].append((a.get("data-series"), a.get("data-values", "")))
        elif tag == "tr" and "data-row" in a:
            self.row = a["data-row"]
        elif tag == "td" and "data-value" in a:
            self.cells.append((self.row, float(a["data-percentile"]), float(a["data-value"])))

    def handle_endtag(self, tag):
        if tag == "svg":
            self.svg = None


def main():
    page, run_json = sys.argv[1], sys.argv[2]
    baseline = "--baseline" in sys.argv
    out = subprocess.run(
        [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         "file://" + __import__("os").path.abspath(page)],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0 or "<svg" not in out.stdout:
        sys.exit(f"check_page: the browser did not render {page}: {out.stderr[-500:]}")
    dom = Dom()
    dom.feed(out.stdout)
    run = json.load(open(run_json))
    problems = []
    for chart in ("throughput", "call-latency", "e2e-latency", "spectrum"):
        if chart not in dom.svgs or not dom.svgs[chart]:
            problems.append(f"chart {chart} missing or empty")
    series = {name: values for chart in dom.svgs.values() for name, values in chart}
    rates = [float(v) for v in series.get("completed/s", "").split()]
    if not rates or abs(sum(rates) - run["count"]) > 1:
        problems.append(f"throughput line sums to {sum(rates)}, the run completed {run['count']}")
    want_e2e = [float(s["e2eP99"]) for s in run["series"]]
    got_e2e = [float(v) for v in series.get("e2e p99", "").split()]
    if [round(v, 3) for v in want_e2e] != got_e2e:
        problems.append(f"e2e p99 line {got_e2e[:5]}… is not the run's {want_e2e[:5]}…")
    for name, key in (("call", "call"), ("report → subscriber", "endToEnd")):
        spectrum = {p["percentile"]: p["ms"] for p in run["spectrum"][key]}
        cells = [(p, v) for row, p, v in dom.cells if row == name]
        if len(cells) != 4:
            problems.append(f"figures row {name!r}: {len(cells)} cells")
        for p, v in cells:
            if abs(spectrum[p] - v) > 0.001:
                problems.append(f"{name} p{p}: page {v}, run {spectrum[p]}")
        line = series.get(name, "").split()
        if len(line) != len(spectrum):
            problems.append(f"spectrum line {name!r} has {len(line)} points")
    if baseline and not any(name and name.endswith("(baseline)") for name in series):
        problems.append("no baseline lines")
    if problems:
        sys.exit("check_page: " + "; ".join(problems))
    print(f"check_page: {page} renders in {shutil.os.path.basename(browser())}: 4 charts, "
          f"{len(series)} lines, {len(dom.cells)} figures, all the run's numbers")


main()
