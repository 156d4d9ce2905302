#!/usr/bin/env python3
"""Regenerates the vendored JSON schemas that .ci/check_deploy.py validates against.

    python3 -m venv /tmp/schemas && /tmp/schemas/bin/pip install kubernetes-validate check-jsonschema
    /tmp/schemas/bin/python .ci/schemas/update.py

* kubernetes-v1.30-strict.json: from the PyPI package kubernetes-validate (schemas generated
  from the Kubernetes OpenAPI spec, Apache-2.0), version v1.30.0, "local-strict" (unknown
  fields are errors). Only the kinds in KINDS and the definitions they reach are kept, without
  descriptions, so the file stays small. 1.30 is the oldest version the manifests support
  (the preStop `sleep` action).
* compose-spec.json: the Compose specification schema (Apache-2.0, see LICENSE.compose-spec)
  as vendored by the PyPI package check-jsonschema.
"""

import importlib.util
import json
import pathlib
import re
import shutil

HERE = pathlib.Path(__file__).resolve().parent
K8S_VERSION = "v1.30.0-local-strict"
KINDS = {
    "Deployment.apps.v1": "deployment-apps-v1.json",
    "Service.v1": "service-v1.json",
    "PodDisruptionBudget.policy.v1": "poddisruptionbudget-policy-v1.json",
    "Secret.v1": "secret-v1.json",
    "ConfigMap.v1": "configmap-v1.json",
    "NetworkPolicy.networking.k8s.io.v1": "networkpolicy-networking-v1.json",
}
REF = re.compile(r"#/\$defs/([^\"]+)")


def package_dir(name):
    return pathlib.Path(importlib.util.find_spec(name).origin).parent


def strip(node):
    if isinstance(node, dict):
        # Descriptions are bulk; a nested $id or $schema would move the base of "#/$defs/…".
        return {k: strip(v) for k, v in node.items() if k not in ("description", "$id", "$schema")}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node


def kubernetes():
    src = package_dir("kubernetes_validate") / "kubernetes-json-schema" / K8S_VERSION
    defs = json.loads((src / "_definitions.json").read_text())["$defs"]
    out, todo = {}, []
    for name, file in KINDS.items():
        text = (src / file).read_text().replace("/api/_definitions.json#/$defs/", "#/$defs/")
        out[name] = strip(json.loads(text))
        todo += REF.findall(text)
    while todo:
        name = todo.pop()
        if name in out:
            continue
        out[name] = strip(defs[name])
        todo += REF.findall(json.dumps(defs[name]))
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": f"kubernetes-validate {K8S_VERSION}, pruned by .ci/schemas/update.py",
        "$defs": dict(sorted(out.items())),
    }
    (HERE / "kubernetes-v1.30-strict.json").write_text(json.dumps(schema, separators=(",", ":")) + "\n")


def compose():
    vendor = package_dir("check_jsonschema") / "builtin_schemas" / "vendor"
    shutil.copy(vendor / "compose-spec.json", HERE / "compose-spec.json")
    shutil.copy(vendor / "licenses" / "LICENSE.compose-spec", HERE / "LICENSE.compose-spec")


if __name__ == "__main__":
    kubernetes()
    compose()
