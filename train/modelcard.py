"""The model card shipped next to the models: data, features, metrics, quantization error."""
from __future__ import annotations

from pathlib import Path


def write_model_card(path: Path, meta: dict, report: dict) -> None:
    t = meta["training"]
    lines = [
        f"# ATLAS agent models {meta['version']}",
        "",
        f"Made by `{report['command']}` on {meta['trained_at']}.",
        "",
        "## Models",
        "",
        f"- `anomaly.tflite` ({meta['anomaly']['version']}): int8 autoencoder trained on benign rows only; "
        f"a row is anomalous when its reconstruction error exceeds {meta['anomaly']['threshold']:.4g} "
        "(the 99.99th percentile of benign training errors of the int8 model, times 1.5).",
        f"- `classifier.tflite` ({meta['classifier']['version']}): int8 softmax over {', '.join(meta['classifier']['classes'])}; "
        f"a kind is named when P(attack) >= {meta['classifier']['min_prob']}.",
        "- Runtime: LiteRT (`ai-edge-litert`), tflite-runtime as fallback; int8 input and output.",
        "",
        "## Features",
        "",
        f"Schema {meta['schema_version']}: {len(meta['feature_names'])} per-device features per tick "
        "(agent/features/schema.py), damped windows with half-lives of 2 s and 30 s; standardized with the "
        "benign training mean and standard deviation.",
        "",
        "## Training data",
        "",
        f"{t['rows']} feature rows from: {', '.join(t['sources'])}. Benign rows during benign look-alikes "
        "(firmware update bursts, rush hour, reconnect storms after a power cut) and benign rows of a device "
        f"connecting (a CONNECT in the short window; {t.get('hard_negative_rows', 0)} rows in all) "
        "weigh 20x in the classifier's loss, as hard negatives. " + _corpus_plan(),
        "",
        "| class | rows |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in t["rows_by_class"].items()],
        "",
        f"Split: {report['split']}.",
        "",
        "## Held-out test captures (incident level)",
        "",
        *_table(report["test"]),
        "",
        "## MQTTset captures (in training: in-sample)",
        "",
        *_table(report["mqttset_in_sample"]),
    ]
    if "zero_day" in report:
        lines += [
            "",
            "## Zero-day: each kind left out of training in turn",
            "",
            "The models are retrained without the kind; the table says whether the agent still raises an incident "
            "naming the attacker (held-out test captures and the MQTTset capture of that kind).",
            "",
            "| kind left out | detected | reported as | MQTTset capture detected |",
            "| --- | --- | --- | --- |",
        ]
        for kind, z in report["zero_day"].items():
            lines.append(
                f"| {kind} | {z['detected']}/{z['attacks']} | {', '.join(z['reported_as']) or '-'} | "
                f"{', '.join('yes' if d else 'no' for d in z['mqttset_detected']) or 'n/a'} |"
            )
    if "realism" in report:
        lines += _realism(report["realism"])
    q = meta["quantization"]
    lines += [
        "",
        "## Quantization error (int8 vs float, mean absolute output difference)",
        "",
        f"- anomaly: {q['anomaly_mean_abs_error']:.4f} (standardized units)",
        f"- classifier: {q['classifier_mean_abs_error']:.4f} (probability)",
        "",
    ]
    path.write_text("\n".join(lines))


def _table(s: dict) -> list[str]:
    rows = [
        "| kind | attacks | detected | kind named right | median time to detect (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, k in s["kinds"].items():
        ttd = "-" if k["median_ttd_s"] is None else f"{k['median_ttd_s']:.1f}"
        rows.append(f"| {kind} | {k['attacks']} | {k['detected']} | {k['named_right']} | {ttd} |")
    fp = s["false_incidents_per_device_day"]
    rows += [
        "",
        f"Attacks detected: {s['detected']}/{s['attacks']}. False incidents (on devices that did not attack): "
        f"{s['false_incidents']} over {s['benign_device_days']} benign device-days"
        + (f" = {fp} per device-day." if fp is not None else "."),
    ]
    return rows


def _realism(r: dict) -> list[str]:
    """Models trained on simulated traffic only, scored on the real MQTTset captures."""
    fp = ", ".join(f"{src} {n}" for src, n in r.get("false_incidents_by_capture", {}).items() if n) or "none"
    return [
        "",
        "## Realism check: trained on simulated traffic only, tested on MQTTset",
        "",
        f"Made by `{r['command']}`: the same training corpus without the MQTTset rows (models in a scratch "
        "folder, not these), every MQTTset capture replayed through the agent.",
        "",
        *_table(r),
        f"False incidents by capture: {fp}.",
    ]


def _corpus_plan() -> str:
    from atlas.train import aftermath, corpus, dataset

    return (
        f"Attacks of {', '.join(corpus.COMPROMISED_KINDS)} run from one of the capture's own devices "
        f"(compromised) with probability {corpus.COMPROMISED_SHARE:g}, and such a device's rows from "
        f"{dataset.AFTERMATH_S:g} s after its attack are benign; {aftermath.ROWS} `synthetic/scan-aftermath` rows "
        "are benign rows with a past scan's residue added to their damped windows (train/aftermath.py); "
        f"connection DoS clients publish to one fixed topic with probability {corpus.FIXED_TOPIC_SHARE:g} "
        "(otherwise MQTT-malaria's per-client topics)."
    )
