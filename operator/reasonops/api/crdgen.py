"""Generate CustomResourceDefinitions from the pydantic models.

pydantic's JSON schema is close to what Kubernetes wants, but a CRD needs a *structural* OpenAPI v3
schema: no $ref, no anyOf for optional fields, no titles, no defaults (the operator applies defaults when
it resolves a spec, so the API server never rewrites what a user or Argo CD applied), lists of named
items marked as maps, and every list and string bounded so CEL rules stay within the cost budget.
A field's static default is stated in its description, "(default X)", written from the API's value.
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from .common import _NO_DEFAULT, DEFAULT_KEY, GROUP, NAMED_LISTS, VERSION, Model, render_default, static_default
from .v1alpha1 import KINDS, Resource

_DROP = {"title", "default", "examples", "propertyNames"}


def with_default(description: str, default: Any) -> str:
    """The description with its default stated: "Requests in flight (default 64)."."""
    stem, dot = (description[:-1], ".") if description.endswith(".") else (description, "")
    return f"{stem} (default {render_default(default)}){dot}"


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].split("/")[-1]]
            merged = {**copy.deepcopy(target), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any], name: str = "") -> dict[str, Any]:
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:  # Optional[X] -> X: optional fields are simply not required
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"field {name!r}: unions other than Optional[X] cannot be expressed in a CRD")
        description = node.get("description")
        node = {**options[0], **{k: v for k, v in node.items() if k not in ("anyOf",)}}
        if description:
            node["description"] = description
    if "const" in node:
        node["enum"] = [node.pop("const")]
    default = node.pop(DEFAULT_KEY, node.get("default"))
    if default not in (None, "") and not isinstance(default, dict) and node.get("description"):
        node["description"] = with_default(node["description"], default)
    for key in _DROP:
        node.pop(key, None)
    extra = node.pop("additionalProperties", None)
    if isinstance(extra, dict):  # a map such as dict[str, str]
        node["additionalProperties"] = _structural(extra, name)
    if "enum" in node and "type" not in node:
        node["type"] = "integer" if all(isinstance(v, int) for v in node["enum"]) else "string"
    if node.get("type") == "object" or "properties" in node:
        node["type"] = "object"
        props = node.get("properties", {})
        node["properties"] = {k: _structural(v, k) for k, v in props.items()}
        if not node["properties"]:
            node.pop("properties")
            if "additionalProperties" not in node:
                node["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array":
        node["items"] = _structural(node["items"], name)
        if name in NAMED_LISTS and "name" in node["items"].get("properties", {}):
            node["x-kubernetes-list-type"] = "map"
            node["x-kubernetes-list-map-keys"] = ["name"]
    return node


def schema_for(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(_resolve(raw, raw.get("$defs", {})), model.__name__)


def build_crd(kind: type[Resource]) -> dict[str, Any]:
    spec = schema_for(kind.spec_model)
    status = schema_for(kind.status_model)
    spec["description"] = f"Desired state of the {kind.kind_name}."
    status["description"] = f"Observed state of the {kind.kind_name}, written by the operator and its pods."
    doc = (kind.__doc__ or "").strip()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind_name,
                "listKind": f"{kind.kind_name}List",
                "plural": kind.plural,
                "singular": kind.kind_name.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["reasonops"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": kind.printer_columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": doc or kind.kind_name,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "description": "API version: reasonops.io/v1alpha1."},
                                "kind": {"type": "string", "description": f"Kind: {kind.kind_name}."},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render_all() -> dict[str, str]:
    """File name -> YAML text of every CRD."""
    header = "# Generated by `reasonops crds` from operator/reasonops/api. Do not edit.\n"
    out = {}
    for kind in KINDS.values():
        crd = build_crd(kind)
        out[f"{GROUP}_{kind.plural}.yaml"] = header + yaml.safe_dump(crd, sort_keys=False, width=120)
    return out


def write_all(directories: list[Path]) -> list[Path]:
    written = []
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in render_all().items():
            path = directory / name
            path.write_text(text)
            written.append(path)
    return written


# --- docs/api-defaults.md -----------------------------------------------------------------------

_DYNAMIC = re.compile(r"\(default: ([^)]*)\)")


def _sub_model(annotation: Any) -> tuple[type[Model] | None, bool]:
    """The model inside Optional[...] / list[...], and whether it sits in a list."""
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return annotation, False
    for arg in typing.get_args(annotation):
        model, in_list = _sub_model(arg)
        if model is not None:
            return model, in_list or typing.get_origin(annotation) is list
    return None, False


def _default_rows(model: type[Model], path: str) -> list[tuple[str, str]]:
    rows = []
    for name, info in model.model_fields.items():
        field_path = f"{path}.{name}"
        default = static_default(info)
        dynamic = _DYNAMIC.search(info.description or "")
        if default is not _NO_DEFAULT and not isinstance(default, dict) and default != "":
            rows.append((field_path, f"`{render_default(default)}`"))
        elif dynamic:
            rows.append((field_path, dynamic.group(1)))
        sub, in_list = _sub_model(info.annotation)
        if sub is not None:
            rows += _default_rows(sub, f"{field_path}[]" if in_list else field_path)
    return rows


def render_defaults_doc() -> str:
    out = [
        "# API defaults",
        "",
        "<!-- Generated by `reasonops crds` from operator/reasonops/api. Do not edit. -->",
        "",
        "Every field left unset takes the default below. Values in `code` are static: each is a named value in",
        "`reasonops.api.v1alpha1` (the CRD descriptions and `kubectl explain` state the same, generated from it),",
        "and `reasonops.api.common.resolve_defaults` fills them in. The others depend on the preset, the protocol or",
        "the operator's settings and are resolved by the workload. The API server never writes a default into a",
        "spec, so GitOps tools see no drift.",
    ]
    for kind in KINDS.values():
        out += ["", f"## {kind.kind_name}", "", "| field | default |", "|---|---|"]
        out += [f"| `{path}` | {value} |" for path, value in _default_rows(kind.spec_model, "spec")]
    return "\n".join(out) + "\n"
