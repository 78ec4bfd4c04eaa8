"""`sam build`: every function and the layer are built by their Makefile with the one shared recipe (no build run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from local.template import Template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Template.load()
FUNCTIONS = {spec.logical_id: spec for spec in TEMPLATE.functions()}
LAYERS = {
    logical_id: resource
    for logical_id, resource in TEMPLATE.resources.items()
    if resource.get("Type") == "AWS::Serverless::LayerVersion"
}


def code_directory(logical_id: str) -> Path:
    """The directory SAM builds the resource from (a function's CodeUri, a layer's ContentUri)."""
    if logical_id in FUNCTIONS:
        return ROOT / FUNCTIONS[logical_id].code_uri
    return ROOT / LAYERS[logical_id]["Properties"]["ContentUri"]


def dry_run(logical_id: str, artifacts: Path) -> str:
    """The commands `make build-<logical id>` would run, from another directory, as SAM runs it from a copy."""
    done = subprocess.run(
        ["make", "--dry-run", "--makefile", str(code_directory(logical_id) / "Makefile"), f"build-{logical_id}"],
        cwd=artifacts,
        env={"PATH": "/usr/bin:/bin", "ARTIFACTS_DIR": str(artifacts)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_template_has_the_seven_functions_and_the_layer() -> None:
    assert set(FUNCTIONS) == {
        "IntakeFunction",
        "MetricsFunction",
        "SenderFunction",
        "SchedulerFunction",
        "ReporterFunction",
        "BounceFunction",
        "TokenRotationFunction",  # only when AdminTokenRotationDays > 0
    }
    assert set(LAYERS) == {"CommonLayer"}


@pytest.mark.parametrize("logical_id", sorted([*FUNCTIONS, *LAYERS]))
def test_every_function_and_the_layer_use_the_makefile_build(logical_id: str) -> None:
    metadata = TEMPLATE.resources[logical_id].get("Metadata") or {}
    assert metadata.get("BuildMethod") == "makefile"
    makefile = (code_directory(logical_id) / "Makefile").read_text(encoding="utf-8")
    assert re.search(rf"^build-{logical_id}:", makefile, re.MULTILINE), f"no build-{logical_id} target"


@pytest.mark.parametrize("logical_id", sorted([*FUNCTIONS, *LAYERS]))
def test_every_build_installs_arm64_wheels_and_compiles_unchecked_hash_bytecode(
    logical_id: str, tmp_path: Path
) -> None:
    commands = dry_run(logical_id, tmp_path)
    assert "--requirement requirements.txt" in commands
    assert "--platform manylinux2014_aarch64 --implementation cp --python-version 3.12 --only-binary=:all:" in commands
    # pip's own .pyc files are timestamp ones, which never match after SAM zips the files dated 1980.
    assert "--no-compile" in commands
    assert "-m compileall" in commands
    assert "--invalidation-mode unchecked-hash" in commands


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_every_function_build_ships_its_handler_module(logical_id: str, tmp_path: Path) -> None:
    module = FUNCTIONS[logical_id].handler.rsplit(".", 1)[0]
    assert (code_directory(logical_id) / f"{module}.py").is_file()
    assert f'cp -R {module}.py "{tmp_path}/"' in dry_run(logical_id, tmp_path).splitlines()


def test_the_layer_build_ships_the_package_under_python(tmp_path: Path) -> None:
    assert f'cp -R mailproxy "{tmp_path}/python/"' in dry_run("CommonLayer", tmp_path).splitlines()
