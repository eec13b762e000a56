"""The whole city: districts, one gateway per (district, domain), devices from the profiles,
a city-wide schedule of attacks, multi-stage cross-domain campaigns and benign look-alikes,
and every gateway's capture with the merged ground truth (`atlas-sim city`).

    from atlas.sim.city import build_city, ScheduleOptions
    r = build_city("out/city", devices=500, gateways=9, duration=600, seed=7)
    print(r.summary())

Stages: layout (who is where) -> schedule (what happens when) -> build (captures, files).
"""
from __future__ import annotations

from atlas.sim.city.build import CityResult, build_city, gateway_seed
from atlas.sim.city.layout import CityLayout, GatewaySpec, plan_layout
from atlas.sim.city.schedule import Campaign, CitySchedule, ScheduleOptions, plan_schedule

__all__ = [
    "Campaign", "CityLayout", "CityResult", "CitySchedule", "GatewaySpec", "ScheduleOptions", "build_city",
    "gateway_seed", "plan_layout", "plan_schedule",
]
