"""The README's CRD field reference is what hack/gen_crd_reference.py makes of crds/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_crd_reference", REPO / "hack" / "gen_crd_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_reference_matches_the_crd_schemas() -> None:
    generator = _generator()
    readme = (REPO / "README.md").read_text()
    assert generator.splice(readme, generator.render_reference()) == readme, (
        "README.md's CRD field reference is stale: run `make crds`"
    )


def test_reference_names_every_spec_and_status_field_of_every_kind() -> None:
    reference = _generator().render_reference()
    for kind in ("EncryptionKey", "KeyProvider", "ClusterKeyProvider"):
        assert f"#### {kind} (" in reference
    for field in (
        "spec.rotation.period",
        "spec.deletionPolicy",
        "spec.adopt.kmsKeyId",
        "status.versions[].kmsKeyRef",
        "status.conditions[].reason",
        "spec.credentialsRef.name",
        "spec.allowedTenants",
    ):
        assert f"| `{field}` |" in reference, field
