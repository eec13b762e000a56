"""Cut the ATT&CK for ICS techniques and D3FEND countermeasures that mappings.toml names out of
the full sources, so the repository ships a small subset with its licence texts.

    python central/ontology/data/make_subsets.py [--attack ../shared/data/attack-ics] [--d3fend ../shared/data/d3fend]

Writes, beside this script:
  attack_ics_subset.json   a STIX 2.1 bundle: the named attack-patterns, MITRE's identity and
                           the marking definitions they cite, unchanged
  d3fend_subset.ttl        the named D3FEND techniques: label, D3FEND id, definition, parents
  d3fend_subset.json       the same techniques' label, id and definition, for readers without rdflib
  LICENSE-attack-ics.txt   copied from the ATT&CK source folder
  LICENSE-d3fend.md        copied from the D3FEND source folder
  SOURCES.md               where each came from (the source READMEs name the upstream commits)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
D3F = "http://d3fend.mitre.org/ontologies/d3fend.owl#"
ATTACK_FILE = "ics-attack-18.1.json"
D3FEND_FILE = "d3fend.ttl"


def wanted() -> tuple[set[str], set[str]]:
    m = tomllib.loads((HERE / "mappings.toml").read_text())
    techniques = {t for k in m["kinds"].values() for t in k["techniques"]}
    countermeasures = {c for a in m["actions"].values() for c in a["countermeasures"]}
    return techniques, countermeasures


def attack_subset(folder: Path, techniques: set[str]) -> dict:
    bundle = json.loads((folder / ATTACK_FILE).read_text())
    picked = []
    for o in bundle["objects"]:
        if o["type"] != "attack-pattern" or o.get("revoked") or o.get("x_mitre_deprecated"):
            continue
        ids = {r.get("external_id") for r in o.get("external_references", []) if r.get("source_name") == "mitre-attack"}
        if ids & techniques:
            picked.append(o)
    found = {r["external_id"] for o in picked for r in o["external_references"] if r.get("source_name") == "mitre-attack"}
    missing = sorted(techniques - found)
    if missing:
        sys.exit(f"make_subsets: {ATTACK_FILE}: no current technique {', '.join(missing)}")
    cited = {o.get("created_by_ref") for o in picked} | {m for o in picked for m in o.get("object_marking_refs", [])}
    extra = [o for o in bundle["objects"] if o["id"] in cited]
    picked.sort(key=lambda o: o["external_references"][0]["external_id"])
    return {"type": "bundle", "id": bundle["id"], "objects": extra + picked}


def d3fend_subset(folder: Path, names: set[str]) -> tuple[str, dict]:
    import rdflib
    from rdflib.namespace import OWL, RDF, RDFS

    full = rdflib.Graph()
    full.parse(folder / D3FEND_FILE)
    d3f = rdflib.Namespace(D3F)
    out = rdflib.Graph()
    out.bind("d3f", d3f)
    table = {}
    for name in sorted(names):
        node = d3f[name]
        if (node, RDFS.label, None) not in full:
            sys.exit(f"make_subsets: {D3FEND_FILE}: no D3FEND class {name}")
        out.add((node, RDF.type, OWL.Class))
        table[name] = {k: str(full.value(node, p) or "") for k, p in
                       (("label", RDFS.label), ("d3fend_id", d3f["d3fend-id"]), ("definition", d3f["definition"]))}
        for p in (RDFS.label, d3f["d3fend-id"], d3f["definition"]):
            for o in full.objects(node, p):
                out.add((node, p, o))
        for parent in full.objects(node, RDFS.subClassOf):
            if isinstance(parent, rdflib.URIRef):
                out.add((node, RDFS.subClassOf, parent))
                for label in full.objects(parent, RDFS.label):
                    out.add((parent, RDFS.label, label))
    header = ("# MITRE D3FEND countermeasures that ATLAS's response actions carry out: a subset of the\n"
              "# D3FEND ontology cut by make_subsets.py (see SOURCES.md). MIT licence: LICENSE-d3fend.md.\n")
    return header + out.serialize(format="turtle"), table


def main(argv: list[str] | None = None) -> int:
    default = HERE.parents[2].parent / "shared" / "data"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attack", type=Path, default=default / "attack-ics")
    ap.add_argument("--d3fend", type=Path, default=default / "d3fend")
    args = ap.parse_args(argv)
    for folder, name in ((args.attack, ATTACK_FILE), (args.d3fend, D3FEND_FILE)):
        if not (folder / name).is_file():
            sys.exit(f"make_subsets: {folder / name}: not found (give --attack / --d3fend)")
    techniques, countermeasures = wanted()
    (HERE / "attack_ics_subset.json").write_text(json.dumps(attack_subset(args.attack, techniques), indent=1, sort_keys=True) + "\n")
    turtle, table = d3fend_subset(args.d3fend, countermeasures)
    (HERE / "d3fend_subset.ttl").write_text(turtle)
    (HERE / "d3fend_subset.json").write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    shutil.copyfile(args.attack / "LICENSE.txt", HERE / "LICENSE-attack-ics.txt")
    shutil.copyfile(args.d3fend / "LICENSE.md", HERE / "LICENSE-d3fend.md")
    digest = {n: hashlib.sha256((f / n).read_bytes()).hexdigest() for f, n in ((args.attack, ATTACK_FILE), (args.d3fend, D3FEND_FILE))}
    (HERE / "SOURCES.md").write_text(
        "# Where the threat and countermeasure subsets come from\n\n"
        "Generated by `make_subsets.py` from the techniques and countermeasures that `mappings.toml` names.\n\n"
        f"- `attack_ics_subset.json`: MITRE ATT&CK for ICS v18.1, `{ATTACK_FILE}` (sha256 {digest[ATTACK_FILE]}),\n"
        "  from the public repository mitre-attack/attack-stix-data at commit 7ad8a86f41edc91dd37de0487b0c2f44ae3a3af7,\n"
        "  file ics-attack/ics-attack-18.1.json. Objects copied unchanged. Licence: `LICENSE-attack-ics.txt`\n"
        "  (\"© 2025 The MITRE Corporation. This work is reproduced and distributed with the permission of The MITRE Corporation.\").\n"
        f"- `d3fend_subset.ttl` and `.json`: MITRE D3FEND, `{D3FEND_FILE}` (sha256 {digest[D3FEND_FILE]}), from the public repository\n"
        "  d3fend/d3fend-ontology at commit 9ffd035832d60254030cdfb215a72b6619cebd3b, file src/ontology/d3fend-protege.ttl:\n"
        "  label, D3FEND id, definition and named parents of each class. Licence: MIT, `LICENSE-d3fend.md`.\n")
    print(f"make_subsets: {len(techniques)} techniques, {len(countermeasures)} countermeasures -> {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
