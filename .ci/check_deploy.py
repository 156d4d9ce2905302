#!/usr/bin/env python3
"""Offline checks of the deployment files: docker-compose.yml against the Compose
specification schema, deploy/kubernetes/*.yaml against the Kubernetes 1.30 schemas (strict:
unknown fields are errors), the kustomization's file references, and the shipped proxy.toml
files against proxy.schema.json. Schemas are vendored in
.ci/schemas (see update.py there); needs only PyYAML and jsonschema.

Exit status 1 with every problem listed, 0 otherwise.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / ".ci" / "schemas"
problems = []


def errors(validator, doc, where):
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in e.absolute_path) or "(top)"
        problems.append(f"{where}: {path}: {e.message}")


def compose():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    path = ROOT / "docker-compose.yml"
    errors(validator, yaml.safe_load(path.read_text()), path.relative_to(ROOT))


def kubernetes():
    bundle = json.loads((SCHEMAS / "kubernetes-v1.30-strict.json").read_text())
    folder = ROOT / "deploy" / "kubernetes"
    seen = 0
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        rel = path.relative_to(ROOT)
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is None:
                continue
            group_version = doc.get("apiVersion", "")
            name = ".".join([doc.get("kind", "?"), *group_version.split("/")])
            if name not in bundle["$defs"]:
                problems.append(f"{rel}[{i}]: no vendored schema for {doc.get('kind')} {group_version}; add it to .ci/schemas/update.py")
                continue
            schema = {"$schema": bundle["$schema"], "$defs": bundle["$defs"], "$ref": f"#/$defs/{name}"}
            errors(jsonschema.Draft202012Validator(schema), doc, f"{rel}[{i}] {doc['kind']}")
            seen += 1
    if seen == 0:
        problems.append(f"{folder.relative_to(ROOT)}: no manifests found")
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    files = list(kustomization.get("resources", []))
    for gen in kustomization.get("configMapGenerator", []) + kustomization.get("secretGenerator", []):
        files += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    for f in files:
        if not (folder / f).is_file():
            problems.append(f"deploy/kubernetes/kustomization.yaml: {f} does not exist")


def config_schema():
    """The shipped proxy.toml files against proxy.schema.json (`coupa-gateway schema`)."""
    import tomllib
    schema = json.loads((ROOT / "proxy.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for rel in ["proxy.toml", "deploy/compose/proxy.toml", "deploy/kubernetes/proxy.toml"]:
        errors(validator, tomllib.loads((ROOT / rel).read_text()), rel)


compose()
kubernetes()
config_schema()
for p in problems:
    print(p, file=sys.stderr)
if problems:
    sys.exit(1)
print("deployment files: docker-compose.yml, deploy/kubernetes and the proxy.toml files valid")
