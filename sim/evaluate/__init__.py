"""The measuring stick (issue 3): `atlas-sim evaluate DIR --out REPORT_DIR`.

Runs the ATLAS agent on every gateway's capture of a city (atlas.sim.evaluate.agent), scores
its incidents against the ground truth (atlas.sim.evaluate.metrics), runs the baselines on the
same city (atlas.sim.evaluate.baselines) and writes report.md, report.json, PNG plots and
`incidents/<gateway>.jsonl` (atlas.sim.evaluate.report, .plots).
"""
from __future__ import annotations
