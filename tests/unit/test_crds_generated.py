"""crds/ is exactly what hack/gen_crds.py generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_crds_match_generator() -> None:
    spec = importlib.util.spec_from_file_location("gen_crds", REPO / "hack" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, document in module.all_crds().items():
        on_disk = (REPO / "crds" / name).read_text()
        assert on_disk == module.render(document), f"crds/{name} is stale: run `make crds`"


def test_crds_kustomization_lists_every_generated_crd() -> None:
    spec = importlib.util.spec_from_file_location("gen_crds", REPO / "hack" / "gen_crds.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kustomization = yaml.safe_load((REPO / "crds" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(module.all_crds()), (
        "crds/kustomization.yaml must list exactly the generated CRDs"
    )
