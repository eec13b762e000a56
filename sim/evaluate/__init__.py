"""The measuring stick: `atlas-sim evaluate DIR --out REPORT_DIR`.

Runs the ATLAS agent on every gateway's capture of a city (atlas.sim.evaluate.agent), scores
its incidents against the ground truth (atlas.sim.evaluate.metrics), runs the baselines on the
same city (atlas.sim.evaluate.baselines) and writes report.md, report.json, PNG plots and
`incidents/<gateway>.jsonl` (atlas.sim.evaluate.report, .plots).

    from atlas.sim.evaluate.run import evaluate
    report = evaluate("out/city", "out/report", workers=2)   # -> Report: .rows, .data, .table_text()

Modules, in the order of the data flow: city (load_city: the folder `atlas-sim city` writes,
checked with clear errors), agent (run_agent: one process per gateway, CPU, telemetry bytes,
score histograms), metrics (pure scoring functions), run (the whole evaluation), report and
plots (output), fixture (build_city: a small city from generate_capture, for tests).
campaigns scores the hub's correlation (full chains, pairwise link precision and recall).
splits declares which seeds and campaign templates are training, validation and report; seeds
(`atlas-sim evaluate-seeds`) builds and evaluates N cities of a split and writes the headline
metrics as mean and 95 % t-interval (summary.json, summary.md).
"""
from __future__ import annotations
