"""The scorer refuses any model that fails to load, for any reason, and keeps scoring with the last good one; it
reads model files only when they are regular files within a size limit, so a FIFO, /dev/zero or a huge file can
neither block a reload nor fill the memory."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import time
from pathlib import Path

import pytest

from linewatch.core.plant import PlantModel
from linewatch.services.scorer import registry, training
from linewatch.services.scorer.models import ClassModel
from linewatch.services.scorer.rollout import ModelSet
from linewatch.simulation.plant_sim import simulated

pytestmark = pytest.mark.reliability
KEY = b"model-files-key"
START = math.floor(1_790_000_000 / 7200) * 7200


@pytest.fixture(scope="module")
def model(plant: PlantModel) -> dict[str, ClassModel]:
    frames = (f for f in simulated(plant, START, 0.1, seed=1) if f.equipment_id == "S1-DRY-01")
    fitted, _ = training.fit(plant, training.collect(plant, frames))
    return fitted


def resign(folder: Path, edit: dict[str, str] | None = None) -> None:
    """Sign the version again after its files changed, as someone holding the key would."""
    metadata = json.loads((folder / "metadata.json").read_text())
    for suffix in ("npz", "skops"):
        metadata["classes"]["dry_room"]["files"][suffix] = hashlib.sha256(
            (folder / f"dry_room.{suffix}").read_bytes()
        ).hexdigest()
    body = json.dumps(metadata | (edit or {}), indent=2, sort_keys=True).encode()
    (folder / "metadata.json").write_bytes(body)
    (folder / "signature").write_text(registry._sign(KEY, body))


def broken_versions(root: Path, model: dict[str, ClassModel]) -> dict[str, str]:
    """Versions broken in each way the scorer must survive, by what is wrong with them."""
    broken = {}
    version = registry.save(root, KEY, model, {"source": "test"}, version="notzip")
    (root / version / "dry_room.skops").write_bytes(b"this is not a zip archive")
    resign(root / version)
    broken["a signed .skops that is not a zip"] = version
    version = registry.save(root, KEY, model, {"source": "test"}, version="fifo")
    (root / version / "metadata.json").unlink()
    os.mkfifo(root / version / "metadata.json")
    broken["metadata.json a FIFO"] = version
    version = registry.save(root, KEY, model, {"source": "test"}, version="zero")
    (root / version / "metadata.json").unlink()
    (root / version / "metadata.json").symlink_to("/dev/zero")
    broken["metadata.json -> /dev/zero"] = version
    version = registry.save(root, KEY, model, {"source": "test"}, version="huge")
    with (root / version / "metadata.json").open("r+b") as handle:
        handle.truncate(600 << 20)  # sparse: 600 MB that take no disk
    broken["a 600 MB metadata.json"] = version
    return broken


def test_broken_model_files_are_refused_fast_and_scoring_keeps_the_last_good_model(
    tmp_path: Path, model: dict[str, ClassModel]
) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    good = registry.save(root, KEY, model, {"source": "test"})
    models = ModelSet(root, KEY)
    registry.point(root, "ACTIVE", good)
    models.refresh()
    assert models.active.version == good
    for what, version in broken_versions(root, model).items():
        began = time.monotonic()
        with pytest.raises(registry.ModelVerificationError):
            registry.load(root, version, KEY)
        registry.point(root, "ACTIVE", version)
        models.refresh()
        assert time.monotonic() - began < 2.0, f"{what}: took too long"
        assert models.active.version == good and models.active.models, what
        assert models.active.refused == version, what


def test_a_pointer_that_is_not_a_file_is_refused_without_blocking(tmp_path: Path, model: dict[str, ClassModel]) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    good = registry.save(root, KEY, model, {"source": "test"})
    registry.point(root, "ACTIVE", good)
    models = ModelSet(root, KEY)
    models.refresh()
    (root / "CANDIDATE").unlink(missing_ok=True)
    os.mkfifo(root / "CANDIDATE")
    began = time.monotonic()
    models.refresh()
    assert time.monotonic() - began < 2.0 and models.active.version == good and models.failures == 1


def test_a_loaded_version_is_out_of_the_collectors_walks(tmp_path: Path, model: dict[str, ClassModel]) -> None:
    root = tmp_path / "registry"
    root.mkdir()
    registry.point(root, "ACTIVE", registry.save(root, KEY, model, {"source": "test"}))
    models = ModelSet(root, KEY)
    gc.unfreeze()
    try:
        models.refresh()
        assert not any(thing is models.active.models for thing in gc.get_objects())
    finally:
        gc.unfreeze()
