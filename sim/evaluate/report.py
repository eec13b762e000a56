"""report.md and report.json: the paper's table first, then every figure behind it.

Each row of the table says where its numbers come from; a row whose part is missing says
"not yet measurable: needs X". Nothing here computes a detection metric: it reads what
atlas.sim.evaluate.run scored and what the baselines returned.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atlas.sim.evaluate.campaigns import describe, describe_links
from atlas.sim.evaluate.metrics import CLOSE_S, SLACK_S, UNIT_S

NOT_YET = "not yet measurable"


@dataclass
class Row:
    metric: str
    claim: str
    baseline: str
    atlas: str
    source: str = ""  # what measured it


@dataclass
class Report:
    data: dict[str, Any]
    rows: list[Row]
    plots: list[str] = field(default_factory=list)
    _roc: dict[str, Any] = field(default_factory=dict)
    _agent: Any = None

    # ---- building --------------------------------------------------------------------------

    @classmethod
    def build(cls, city, agent, baselines: dict[str, Any], command: str) -> "Report":
        m = agent.metrics
        roc = m.get("roc", {})
        data = {
            "command": command,
            "city": {"dir": str(city.dir), "seed": city.seed, "command": city.command, "start": city.start,
                     "duration_s": city.duration, "gateways": len(city.gateway_ids), "devices": city.device_count,
                     "attack_steps": len(city.steps), "lookalikes": len(city.benign),
                     "kinds": sorted({s.kind for s in city.steps}),
                     "campaign_templates": {c["id"]: c.get("template", "") for c in city.meta.get("campaigns", [])}},
            "definitions": DEFINITIONS,
            "atlas": {k: v for k, v in m.items() if k != "roc"}
            | {"roc": {d: {k: v for k, v in r.items() if not k.startswith("_")} for d, r in roc.items()}},
            "gateways": [_gateway_row(r) for r in agent.gateways.values()],
            "agent_run": {"workers": agent.workers, "wall_s": agent.wall_s, "cores": agent.cores,
                          "conformance": bool(getattr(agent, "conformance", False)),
                          "model_version": next((r.model_version for r in agent.gateways.values()), "")},
            "baselines": {name: _baseline_dict(res) for name, res in baselines.items()},
        }
        from atlas.sim.evaluate.figures import metrics_object

        data["metrics"], data["metrics_missing"] = metrics_object(city, m, data["agent_run"]["model_version"],
                                                                  getattr(agent, "models_dir", None))
        data = {"metrics": data.pop("metrics"), "metrics_missing": data.pop("metrics_missing")} | data
        rows = paper_rows(data)
        data["table"] = [vars(r) for r in rows]
        return cls(data, rows, _roc=roc, _agent=agent)

    # ---- output ----------------------------------------------------------------------------

    def write(self, out: Path, plots: bool = True) -> None:
        if plots:
            from atlas.sim.evaluate.plots import write_plots

            self.plots = write_plots(out, self.data, self._roc, self._agent)
        self.data["plots"] = self.plots
        (out / "report.json").write_text(json.dumps(self.data, indent=1, default=_json) + "\n")
        (out / "report.md").write_text(self.markdown())

    def table_text(self) -> str:
        """The table for the terminal: one block per metric (the cells are long)."""
        lines = ["metric: paper's claim | baseline measured here | ATLAS measured here", ""]
        for r in self.rows:
            lines += [r.metric, f"  paper     {r.claim}", f"  baseline  {r.baseline}", f"  ATLAS     {r.atlas}"]
        c = self.data["city"]
        lines.append(f"\ncity: {c['devices']} devices, {c['gateways']} gateways, {c['duration_s']:g} s, seed {c['seed']} "
                     f"({c['command']})\nreport: {self.data['command']}")
        return "\n".join(lines)

    def markdown(self) -> str:
        d, c, a = self.data, self.data["city"], self.data["atlas"]
        out = ["# ATLAS evaluation", "",
               f"- City: {c['devices']} devices behind {c['gateways']} gateways, {c['duration_s']:g} s of traffic, "
               f"seed {c['seed']}, {c['attack_steps']} attack steps ({', '.join(c['kinds'])}), {c['lookalikes']} benign look-alikes.",
               f"- City made by: `{c['command']}`", f"- Report made by: `{d['command']}`",
               f"- Agent: the shipped models ({d['agent_run']['model_version']}), default configuration, "
               + ("profile conformance on (each gateway's device inventory, as deployed)."
                  if d["agent_run"]["conformance"] else "models only (no device inventory: `--no-conformance`)."), "",
               "| metric | paper's claim | baseline measured here | ATLAS measured here |", "|---|---|---|---|"]
        out += [f"| {r.metric} | {r.claim} | {_md(r.baseline)} | {_md(r.atlas)} |" for r in self.rows]
        out += ["", "Where each row comes from:", ""] + [f"- **{r.metric}**: {r.source}" for r in self.rows]
        out += ["", "## Definitions", ""] + [f"- **{k}**: {v}" for k, v in DEFINITIONS.items()]
        o = a["overall"]
        out += ["", "## ATLAS detection, overall and per attack kind", "",
                "Units: (gateway, source, minute). Per kind: that kind's attack minutes against every benign minute "
                "(so false positives are shared by all kinds). Steps: attack steps with a matching incident.", "",
                "| kind | steps detected | named right | precision | recall | F1 | accuracy | balanced acc. | TTD median | TTD p95 |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for kind, k in [("**all**", o)] + sorted(a["by_kind"].items()):
            novel = " (novel)" if kind in a["novel"].get("kinds", []) else ""
            out.append(f"| {kind}{novel} | {k['steps_detected']}/{k['steps']} | {k['named_right']} | {_pct(k.get('precision'))} | "
                       f"{_pct(k.get('recall'))} | {_pct(k.get('f1'))} | {_pct(k.get('accuracy'))} | "
                       f"{_pct(k.get('balanced_accuracy'))} | {_dur(k['ttd']['median_s'])} | {_dur(k['ttd']['p95_s'])} |")
        u = o.get("units", {})
        out += ["", f"Units: TP {u.get('tp')}, FP {u.get('fp')}, FN {u.get('fn')}, TN {u.get('tn')}.", ""]
        n = a["novel"]
        out += ["## Zero-day: kinds the classifier never saw", ""]
        if n["steps"]:
            out.append(f"Kinds: {', '.join(n['kinds'])}. Steps detected {n['steps_detected']}/{n['steps']}; recall (units) "
                       f"{_pct(n.get('recall'))}; time to detection median {_dur(n['ttd']['median_s'])}, p95 {_dur(n['ttd']['p95_s'])}.")
            mo = a.get("models_only", {}).get("novel")
            if mo and d["agent_run"]["conformance"]:
                out.append("")
                out.append(f"By the learned models and counters alone (incidents of the profile-conformance check, "
                           f"false_data and profile_violation, left out): steps detected {mo['steps_detected']}/{mo['steps']}; "
                           f"time to detection median {_dur(mo['ttd']['median_s'])}, p95 {_dur(mo['ttd']['p95_s'])}.")
                out += ["", "| kind | steps | with conformance | models alone |", "|---|---|---|---|"]
                for kind in n["kinds"]:
                    full, alone = a["by_kind"][kind], a["models_only"]["by_kind"][kind]
                    out.append(f"| {kind} | {full['steps']} | {full['steps_detected']} | {alone['steps_detected']} |")
        else:
            out.append(f"{NOT_YET}: the city has no attack of a kind outside the classifier's training "
                       "(mirai_scan, exfiltration, false_data).")
        fp = a["false_positives"]
        out += ["", "## False positives", "",
                f"{fp['incidents']} incidents matched no attack step: {_num(fp['per_device_day'], 2)} per device-day "
                f"over {fp['device_days']:.2f} device-days; {fp['on_attacker_addresses']} of them on attackers' addresses "
                f"outside their steps; {fp['in_lookalikes']} inside benign look-alikes "
                f"({', '.join(f'{k} {v}' for k, v in fp['in_lookalikes_by_kind'].items()) or 'none'})."]
        camp = a["campaigns"]
        out += ["", "## Multi-stage campaigns", ""]
        if camp["count"]:
            out.append(f"{camp['count']} campaign(s); every stage detected by the agents in {camp['every_stage_detected']}. "
                       "Linking the stages into one campaign is the hub's correlation (atlas.central.correlate on the "
                       "agents' incidents; scoring in atlas.sim.evaluate.campaigns).")
            corr = a.get("correlation") or {}
            for scope, label in (("city", "city-wide (the hub)"), ("domain", "per-domain isolation")):
                if corr.get(scope):
                    out.append(f"- {label}: {describe(corr[scope])}")
            templates = c.get("campaign_templates", {})
            hub = (corr.get("city") or {}).get("by_campaign", {})
            dom = (corr.get("domain") or {}).get("by_campaign", {})
            out += ["", "| campaign | template | gateways | stages detected | linked city-wide | linked per domain |",
                    "|---|---|---|---|---|---|"]
            for cid, v in camp["by_campaign"].items():
                h, d_ = hub.get(cid, {}), dom.get(cid, {})
                out.append(f"| {cid} | {templates.get(cid, '')} | {', '.join(v['gateways'])} | {v['stages_detected']}/{v['stages']} "
                           f"| {h.get('stages_linked', 'n/a')}/{v['stages']} | {d_.get('stages_linked', 'n/a')}/{v['stages']} |")
        else:
            out.append("The city has no multi-stage campaign.")
        out += responses_section(a.get("response") or {})
        cpu, bw = a["cpu"], a["bandwidth"]
        out += ["", "## Agent CPU and bandwidth", "",
                f"Agent CPU (reading the capture, decoding, features, both models, incidents, summaries, telemetry encoding): "
                f"{cpu['agent_cpu_s']:.2f} CPU-s for {cpu['packets']:,} packets ({cpu['packets_per_cpu_s']:,.0f} packets per CPU-s) "
                f"over {cpu['traffic_s']:g} s of traffic per gateway. Share of one core while keeping up in real time: mean "
                f"{_pct(cpu['share_one_core_mean'], 2)}, worst gateway {_pct(cpu['share_one_core_max'], 2)}; "
                f"of this {cpu['cores_here']}-core machine: {_pct(cpu['share_machine_mean'], 2)} ({cpu['machine']}; "
                f"left out: the harness's own bookkeeping, {cpu['harness_cpu_s_excluded']:.2f} CPU-s, and loading the models at "
                f"start, {cpu['startup_cpu_s_excluded']:.2f} CPU-s for all gateways).",
                "",
                f"Telemetry to the hub (what atlas-agent would send: incidents every second while they change, per-device "
                f"summaries every 300 s, health every 60 s; protobuf + zstd, with gRPC framing, TLS not counted): "
                f"{bw['bytes']:,} bytes in {bw['batches']} batches, {_num(bw['bytes_per_device_hour'], 0)} bytes per device-hour "
                f"({bw['raw_bytes']:,} bytes before compression)."]
        roc = a.get("roc", {})
        if roc:
            out += ["", "## Detectors on the scored rows (ROC)", "",
                    "Every per-device feature row of every tick, positive when its device is an attacker of a step active "
                    "at that tick.", "", "| detector | AUC | positive rows | negative rows | threshold | FPR | TPR |",
                    "|---|---|---|---|---|---|---|"]
            for name, r in roc.items():
                op = r["operating_point"]
                out.append(f"| {name} | {_num(r['auc'], 4)} | {r['positive_rows']:,} | {r['negative_rows']:,} | "
                           f"{_num(r['threshold'], 3)} | {_pct(op['fpr'], 4)} | {_pct(op['tpr'], 1)} |")
        out += ["", "## Per gateway", "", "| gateway | devices | packets | incidents | CPU-s | share of one core | telemetry bytes |",
                "|---|---|---|---|---|---|---|"]
        for g in d["gateways"]:
            out.append(f"| {g['gateway']} | {g['devices']} | {g['packets']:,} | {g['incidents']} | {g['cpu_s']:.2f} | "
                       f"{_pct(g['cpu_share_one_core'], 2)} | {g['telemetry_bytes']:,} |")
        out += ["", "## Baselines", ""]
        if not d["baselines"]:
            out.append("None run (`--no-baselines`, or none registered in atlas.sim.evaluate.baselines).")
        for name, b in d["baselines"].items():
            figures = ", ".join(f"{k} {_fmt_metric(k, v)}" for k, v in b["metrics"].items() if v is not None) or "no figures"
            out.append(f"- **{name}**: {figures}. {b['notes']}".rstrip())
        if self.plots:
            out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in self.plots]
        steps = a["steps"]
        out += ["", "## Attack steps", "", "| step | kind | gateway | attackers | detected after | named |", "|---|---|---|---|---|---|"]
        for s in steps:
            out.append(f"| {s['id']} | {s['kind']} | {s['gateway']} | {', '.join(s['attackers'][:3])}"
                       f"{' ...' if len(s['attackers']) > 3 else ''} | {_dur(s['ttd_s']) if s['detected'] else 'MISSED'} | "
                       f"{', '.join(s['named']) or '-'} |")
        return "\n".join(out) + "\n"


DEFINITIONS = {
    "unit": f"(gateway, source address, minute): each source with traffic at a gateway in a {UNIT_S:g} s window; positive "
            "when the source is an attacker of a step whose first..last attack packet overlaps the minute, predicted "
            "positive when an incident on that source is active (raised..last evidence) in it. One currency for both "
            "errors; detection delay costs recall; the negatives are every device's every minute.",
    "match": f"an incident matches an attack step when it is on the step's gateway, its source is one of the step's "
             f"attackers and its span overlaps [first attack packet - {SLACK_S:g} s, last attack packet + {CLOSE_S:g} s] "
             "(the agent's close window); an incident matching no step is a false positive.",
    "accuracy": "(TP + TN) / all units. The benign minutes dominate, so balanced accuracy ((recall + TNR) / 2) and "
                "step-level recall are given beside it.",
    "false positive rate": "FP / (FP + TN) over the units; false positives per device-day count incidents matching no step "
                           "divided by (devices x days of traffic).",
    "time to detection": "from the step's first attack packet to the raise of the first matching incident (the tick that "
                         "confirmed it), floored at 0; missed steps are counted apart, not as a time.",
    "zero-day": "attack kinds outside the classifier's training set (atlas.agent.alerts.KNOWN_KINDS): the agent can only "
                "catch them with its anomaly model, counters and profile checks.",
    "bandwidth": "bytes on the wire to the hub per device-hour, with the agent's real telemetry encoding "
                 "(atlas.link.serde, zstd) and the daemon's reporting intervals.",
    "CPU": "the agent's process CPU time for the replay divided by the seconds of traffic: the share of one core a gateway "
           "needs to keep up in real time, on this machine (not a gateway board).",
    "availability": "share of (critical service instance, 10 s slot) pairs in which the service met its function: enough "
                    "of its devices' messages reached the broker's back-end within its deadline with intact readings, and "
                    "the services it depends on met theirs. Attacks' effects and each policy's rules are applied to the "
                    "same traffic (atlas.sim.evaluate.availability, effects.BrokerModel).",
    "containment": "share of attack steps whose attacker packets the policy's rules removed at least half of.",
    "kind accuracy": "detected steps whose matching incidents include the step's own kind / detected steps.",
}

# The paper's claims, row by row: (metric, claim, baseline name, what the baseline gives).
PAPER = (
    ("anomaly-detection accuracy", "93.7 % (+21 % over signature-based)", "signature"),
    ("time to detection, novel attacks", "9.6 min (vs 18.2 min centralized)", "centralized"),
    ("multi-stage cross-domain attacks detected", "89.3 % (vs 61.8 % per-domain)", "per_domain"),
    ("false positives", "2.3 % (vs 7.2 %)", "signature"),
    ("availability of critical services during mitigation", "99.2 % (vs 86.5 % static playbooks)", "static_playbook"),
    ("bandwidth to the hub", "34 % less than centralized monitoring", "centralized"),
    ("CPU overhead on the gateway", "7.3 %", ""),
)


def paper_rows(d: dict[str, Any]) -> list[Row]:
    a, base = d["atlas"], d["baselines"]

    def bm(name: str, key: str) -> Any:
        return base.get(name, {}).get("metrics", {}).get(key)

    def missing(name: str, what: str) -> str:
        if name not in base:
            return f"{NOT_YET}: needs the {name} baseline (atlas.sim.evaluate.baselines)"
        notes = base[name].get("notes") or ""
        if notes.startswith("failed"):
            return f"{NOT_YET}: the {name} baseline {notes}"
        return f"{NOT_YET}: {what} (see the {name} baseline's notes below)"

    def atlas_extra(key: str) -> Any:
        for b in base.values():
            if b.get("atlas", {}).get(key) is not None:
                return b["atlas"][key], b["name"]
        return None, ""

    o, n = a["overall"], a["novel"]
    rows = []
    # 1. accuracy
    acc_b = bm("signature", "accuracy")
    atl = f"{_pct(o.get('accuracy'), 2)} (balanced {_pct(o.get('balanced_accuracy'), 1)}; F1 {_pct(o.get('f1'), 1)}; " \
          f"steps {o['steps_detected']}/{o['steps']})"
    if acc_b is not None and o.get("accuracy") is not None:
        atl += f"; {100 * (o['accuracy'] - acc_b):+.2f} points against signature"
    bal_b = base.get("signature", {}).get("scored", {}) or {}
    rows.append(Row(*PAPER[0][:2], _pct(acc_b, 2) + (f" (balanced {_pct(bal_b.get('balanced_accuracy'), 1)}; F1 {_pct(bal_b.get('f1'), 1)}; "
                                                     f"steps {bal_b.get('steps_detected')}/{bal_b.get('steps')})" if bal_b.get("balanced_accuracy") is not None else "")
                    if acc_b is not None else missing("signature", "the signature baseline gave no accuracy"), atl,
                    "units scored by atlas.sim.evaluate.metrics for both; baseline: signature/threshold rules"))
    # 2. time to detection, novel kinds
    ttd_b = bm("centralized", "ttd_novel_median_s")
    if n["steps"]:
        atl = (f"{_dur(n['ttd']['median_s'])} median, p95 {_dur(n['ttd']['p95_s'])} ({n['steps_detected']}/{n['steps']} "
               f"novel steps detected: {', '.join(n['kinds'])})") if n["steps_detected"] else \
            f"none of {n['steps']} novel steps detected"
        mo = a.get("models_only", {}).get("novel")
        if mo and d["agent_run"].get("conformance"):
            atl += f"; by the models alone {mo['steps_detected']}/{mo['steps']}, median {_dur(mo['ttd']['median_s'])}"
    else:
        atl = f"{NOT_YET}: needs the novel kinds (mirai_scan, exfiltration, false_data) in the city"
    rows.append(Row(*PAPER[1][:2], _dur(ttd_b) + " median" if ttd_b is not None else missing("centralized", "no novel-kind time"),
                    atl, "first attack packet to the first incident naming the attacker, kinds outside the classifier's training"))
    # 3. campaigns: the full chain linked as one campaign (the paper's "detected"); >= 2 stages beside it
    camp, corr = a["campaigns"], a.get("correlation") or {}
    hub = corr.get("city") or {}
    cb, cb2 = bm("per_domain", "campaigns_detected"), bm("per_domain", "campaigns_two_or_more_linked")
    if hub.get("campaigns"):
        atl = (f"{_pct(hub['share_full_chain'], 1)} full chain linked ({hub['full_chain']}/{hub['campaigns']}); "
               f">= 2 stages linked {_pct(hub['share_two_or_more'], 1)}; {hub['false_campaigns']} false campaigns "
               "(`atlas.central.correlate` city-wide on ATLAS's incidents)")
    elif camp["count"]:
        atl = (f"{NOT_YET}: needs the hub's cross-domain correlation engine; every stage detected by the agents in "
               f"{camp['every_stage_detected']}/{camp['count']} campaign(s)")
    else:
        atl = f"{NOT_YET}: the city has no multi-stage campaign"
    dom = corr.get("domain") or {}
    base_txt = (f"per-domain correlation: {_pct(cb, 1)} full chain linked" + (
        f" ({dom['full_chain']}/{dom['campaigns']})" if dom.get("campaigns") else "") + (
        f"; >= 2 stages linked {_pct(cb2, 1)}" if cb2 is not None else "")) if cb is not None else \
        missing("per_domain", "no campaign figure")
    hl, dl = hub.get("links") or {}, dom.get("links") or {}
    if hl:
        atl += f"; {describe_links(hl)}"
    if dl and cb is not None:
        base_txt += (f"; {describe_links(dl)}: it cannot link across domains, so its recall over every true pair "
                     "is capped by the cross-domain pairs")
    rows.append(Row(*PAPER[2][:2], base_txt, atl,
                    "full chain = every stage of the campaign in one linked campaign (the figure compared); "
                    "agents alone only detect stages"))
    # 4. false positives
    fp = a["false_positives"]
    fpr_b = bm("signature", "false_positive_rate")
    fp_b = (base.get("signature", {}).get("scored") or {}).get("false_positives") or {}
    rows.append(Row(*PAPER[3][:2], (_pct(fpr_b, 2) + " of benign units" + (
                        f"; {_pct(fp_b.get('share_of_detections'), 1)} of alerts false" if fp_b else ""))
                    if fpr_b is not None else missing("signature", "no false positive rate"),
                    f"{_pct(o.get('false_positive_rate'), 2)} of benign units; {_pct(fp['share_of_detections'], 1)} of "
                    f"incidents false; {_num(fp['per_device_day'], 2)} false incidents per device-day "
                    f"({fp['in_lookalikes']} in look-alikes)",
                    "FP / (FP + TN) over (gateway, source, minute) units; and false incidents / all incidents"))
    # 5. availability: every policy in the closed loop (atlas.sim.evaluate.availability)
    resp = a.get("response") or {}
    pols = resp.get("policies") or {}
    if pols:
        mine = resp.get("policy", "playbook")
        st, no, at = pols.get("static", {}), pols.get("none", {}), pols.get(mine, {})
        verdict = ""
        if at.get("availability_critical") is not None and st.get("availability_critical") is not None \
                and at["availability_critical"] <= st["availability_critical"]:
            verdict = "; does not beat the static playbook on availability"
        rows.append(Row(*PAPER[4][:2],
                        f"static {_pct(st.get('availability_critical'), 1)}, containment {_pct(st.get('containment'), 0)}; "
                        f"doing nothing {_pct(no.get('availability_critical'), 1)}, containment {_pct(no.get('containment'), 0)}",
                        f"{mine} {_pct(at.get('availability_critical'), 1)}, containment {_pct(at.get('containment'), 0)}{verdict}",
                        f"critical service-slots ({resp.get('slot_s', 10):g} s) met, with the attacks' effects and each "
                        "policy's rules applied to the same traffic (atlas.sim.evaluate.availability); containment: attack "
                        "steps whose packets the rules mostly removed"))
    else:
        av, src = atlas_extra("availability")
        avb = bm("static_playbook", "availability")
        rows.append(Row(*PAPER[4][:2], _pct(avb, 1) if avb is not None else missing("static_playbook", "no availability figure"),
                        f"{_pct(av, 1)} (measured in the {src} baseline's run, see its notes)" if av is not None else
                        f"{NOT_YET}: needs the hub's response decisions applied to the city (decide + enforcement replay)",
                        "critical-service time kept while responses are in force"))
    # 6. bandwidth
    bw = a["bandwidth"]["bytes_per_device_hour"]
    bwb = bm("centralized", "bandwidth_bytes_per_device_hour")
    atl = f"{_num(bw, 0)} bytes per device-hour"
    if bw is not None and bwb:
        atl += f" ({100 * (1 - bw / bwb):.1f} % less than centralized)"
    rows.append(Row(*PAPER[5][:2], f"{_num(bwb, 0)} bytes per device-hour" if bwb is not None else
                    missing("centralized", "no bandwidth figure"), atl,
                    "the agent's telemetry with its real encoding against the centralized monitor's flow records"))
    # 7. CPU
    cpu = a["cpu"]
    cpub = None
    for b in base.values():
        if b.get("metrics", {}).get("cpu_share_one_core") is not None:
            cpub = (b["metrics"]["cpu_share_one_core"], b["name"])
    rows.append(Row(*PAPER[6][:2], f"{_pct(cpub[0], 2)} of one core ({cpub[1]})" if cpub else "no baseline in the paper",
                    f"{_pct(cpu['share_one_core_mean'], 2)} of one core (worst gateway {_pct(cpu['share_one_core_max'], 2)}); "
                    f"{_pct(cpu['share_machine_mean'], 2)} of this {cpu['cores_here']}-core machine",
                    "agent CPU-s per second of traffic, per gateway, on this x86 machine"))
    return rows


# ---- helpers -------------------------------------------------------------------------------

def responses_section(resp: dict[str, Any]) -> list[str]:
    """What the attacks did to the services under each policy, and what each policy did."""
    pols = resp.get("policies") or {}
    if not pols:
        return []
    out = ["", "## Critical services under attack, per response policy", "",
           f"Each policy answers ATLAS's incidents on the same traffic; the attacks' effects (broker queue and "
           f"connection slots, forged readings) and the policy's rules (from raise + dispatch to their TTL) are applied "
           f"together, in slots of {resp.get('slot_s', 10):g} s (atlas.sim.evaluate.availability). "
           f"Scored as ATLAS: `{resp.get('policy', 'playbook')}`. Times are UTC.", "",
           "| policy | critical availability | all services | steps contained | rules | services that failed (time) |",
           "|---|---|---|---|---|---|"]
    for name, v in pols.items():
        failed = "; ".join(f"{k} {sum(b - a for a, b in spans):g} s ({', '.join(_clock(a) for a, _ in spans[:3])})"
                           for k, spans in v["failed_spans"].items()) or "none"
        acts = ", ".join(f"{n} {k}" for k, n in sorted(v["actions"].items())) or "none"
        out.append(f"| {name} | {_pct(v['availability_critical'], 1)} | {_pct(v['availability_all'], 1)} | "
                   f"{v['steps_contained']}/{v['steps']} | {acts} | {failed} |")
    names = list(pols)
    out += ["", ("Per attack step: when it ran, and per policy the first rule against its attacker (seconds after "
                 "the step's first packet) and the share of its packets the rules removed."), "",
            "| step | kind | gateway | ran (UTC) | " + " | ".join(names) + " |", "|---|---|---|---|" + "---|" * len(names)]
    by_policy = {n: {s["id"]: s for s in pols[n]["by_step"]} for n in names}
    for s in pols[names[0]]["by_step"]:
        cells = []
        for n in names:
            x = by_policy[n].get(s["id"], {})
            rule = x.get("first_rule")
            cells.append(f"{rule['action']} +{rule['at'] - s['start']:.0f} s, {_pct(x['removed'], 0)} removed" if rule else "no rule")
        out.append(f"| {s['id']} | {s['kind']} | {s['gateway']} | {_clock(s['start'])}-{_clock(s['end'])} | "
                   + " | ".join(cells) + " |")
    return out


def _clock(t: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.gmtime(t))


def _gateway_row(r) -> dict[str, Any]:
    return {"gateway": r.gateway, "devices": r.devices, "packets": r.frames, "rows": r.rows, "incidents": len(r.incidents),
            "cpu_s": r.cpu_s, "startup_cpu_s": r.startup_cpu_s, "wall_s": r.wall_s, "cpu_share_one_core": r.cpu_share_one_core,
            "telemetry_bytes": r.telemetry.get("bytes", 0), "telemetry": r.telemetry, "model_version": r.model_version,
            "cpu_timeline": r.cpu_timeline}


def _baseline_dict(res) -> dict[str, Any]:
    d = res.to_dict()
    scored = getattr(res, "scored", None)
    if scored:
        d["scored"] = {k: v for k, v in scored["overall"].items()} | {
            "novel": scored["novel"], "false_positives": scored["false_positives"], "campaigns": scored["campaigns"]}
        d["scored_steps"] = [{k: s[k] for k in ("id", "kind", "novel", "detected", "ttd_s")} for s in scored["steps"]]
    return d


def _json(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (set, tuple)):
        return list(v)
    return str(v)


def _ok(v: Any) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _pct(v: Any, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %" if _ok(v) else "n/a"


def _num(v: Any, digits: int = 1) -> str:
    return f"{v:,.{digits}f}" if _ok(v) else "n/a"


def _dur(v: Any) -> str:
    if not _ok(v):
        return "n/a"
    return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"


def _fmt_metric(key: str, v: Any) -> str:
    if not isinstance(v, (int, float)):
        return str(v)
    if key.endswith("_s"):
        return _dur(v)
    if key.startswith("bandwidth"):
        return _num(v, 0)
    if 0 <= v <= 1 and key not in ("detections",):
        return _pct(v, 2)
    return _num(v, 2)


def _md(text: str) -> str:
    return text.replace("|", "\\|")
