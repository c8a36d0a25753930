"""Rendering the PDF of a 12x12 cohort report with three charts (heatmap, retention curves, cohort sizes).

    .venv/bin/python -m bench.reports_pdf [--renders 8]

On the demo platform database (demo/business_db.py: 3,000 accounts, 12 months; made once under
.run/bench/). Cold: a fresh process runs the report and renders it once (imports of matplotlib and
weasyprint, font loading, all of it), as the first scheduled run after a start does. Warm: the following
renders in one process, as the service's later runs. The goal is at most 5 s. Rendering is the whole of
``reports_service.pdf.render_pdf``: the three charts as PNG, the HTML, and weasyprint's PDF.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

DATABASE = Path(".run/bench/reports-cohorts-platform.sqlite3")
SPEC = {"source": "retention_cohorts", "cohorts": 12, "periods": 12}


def one_process(renders: int) -> dict[str, object]:
    """Run inside a fresh interpreter: the first render (cold) and ``renders - 1`` more (warm)."""
    started = time.perf_counter()
    from sqlalchemy import create_engine

    from reports_service.pdf import render_pdf
    from reports_service.query import run_report
    from reports_service.scheduler import spec_adapter

    spec = spec_adapter.validate_python(SPEC)
    engine = create_engine(f"sqlite:///{DATABASE}")
    times, query_times, sizes = [], [], []
    for n in range(renders):
        clock = time.perf_counter()
        result = run_report(engine, spec, datetime.now(UTC), 10_000, 30)
        query_times.append(time.perf_counter() - clock)
        document = render_pdf("Weekly retention cohorts", "Bench", SPEC, result, datetime.now(UTC))
        elapsed = time.perf_counter() - (started if n == 0 else clock)
        times.append(elapsed)
        sizes.append(len(document.pdf))
        if n == 0:
            Path(".run/bench/cohort-report.pdf").write_bytes(document.pdf)
    return {"times": times, "query": query_times, "bytes": sizes[-1], "rows": len(result.rows)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--renders", type=int, default=8)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(one_process(args.renders)))
        return
    if not DATABASE.exists() or time.time() - DATABASE.stat().st_mtime > 86_400:
        subprocess.run([sys.executable, "-m", "demo.business_db", "--out", str(DATABASE), "--quiet"], check=True)
    load = os.getloadavg()[0]
    done = subprocess.run(
        [sys.executable, "-m", "bench.reports_pdf", "--child", "--renders", str(args.renders)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    times = figures["times"]
    warm = times[1:] or times
    print(f"12x12 cohort report, 3 charts, {figures['bytes']} bytes; load1={load:.1f} before the run")
    print("| render | seconds |")
    print("|---|---|")
    print(f"| cold (fresh process: imports, fonts, query, render) | {times[0]:.2f} |")
    print(f"| warm, median of {len(warm)} (query and render) | {statistics.median(warm):.2f} |")
    print(f"| warm, max | {max(warm):.2f} |")
    queries = figures["query"][1:] or figures["query"]
    print(f"| of which the cohort queries, median | {statistics.median(queries):.3f} |")


if __name__ == "__main__":
    main()
