"""Write the parts of Kyverno's CRDs that the importer's field test walks.

The upstream CRDs (config/crds/kyverno/kyverno.io_{clusterpolicies,policies}.yaml, 1.4 MB each) are
mostly descriptions and the schemas of validate/mutate/generate rules, which the importer does not read.
This keeps, for every served version, the openAPIV3Schema with every ``description`` removed and the
``validate``/``mutate``/``generate`` rule subtrees and ``status`` (written by Kyverno, with copies of
the rules) replaced by a marked empty object (their presence is still declared).

ImageValidatingPolicy and the two PolicyException CRDs have no ``rules``: only the descriptions and
``status`` are taken out.

Usage: python extract_kyverno.py UPSTREAM_CRD.yaml > kyverno.io_X.schema.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

PRUNED = ("validate", "mutate", "generate")


def strip(node: Any, under_rule: bool = False) -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "description":
                continue
            if under_rule and k in PRUNED:
                out[k] = {"type": "object", "x-sigaudit-pruned": True}
                continue
            out[k] = strip(v, under_rule=False)
        return out
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def main() -> None:
    crd = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
    versions = {}
    for v in crd["spec"]["versions"]:
        if not v.get("served"):
            continue
        schema = v["schema"]["openAPIV3Schema"]
        spec = schema["properties"]["spec"]["properties"]
        if "rules" in spec:
            rules = spec["rules"]["items"]
            rules["properties"] = strip(rules["properties"], under_rule=True)
        if "status" in schema["properties"]:
            schema["properties"]["status"] = {"type": "object", "x-sigaudit-pruned": True}
        versions[v["name"]] = strip(schema)
    json.dump({"kind": crd["spec"]["names"]["kind"], "versions": versions}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
