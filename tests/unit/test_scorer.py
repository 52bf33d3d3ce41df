"""Scorer: training, signed artifacts, rollout, detection quality, CSV import."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io

from linewatch.core.commandline import UsageError
from linewatch.core.plant import PlantModel
from linewatch.services.scorer import evaluate, registry, training
from linewatch.services.scorer.agents import scores_for
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.models import ClassModel
from linewatch.services.scorer.rollout import ModelSet
from linewatch.simulation.plant_sim import simulated
from linewatch.storage import historian

KEY = b"test-signing-key"
START = math.floor(1_790_000_000 / 7200) * 7200  # fixed: runs are reproducible


@pytest.fixture(scope="module")
def models(plant: PlantModel) -> dict[str, ClassModel]:
    return training.fit(plant, training.collect(plant, simulated(plant, START, 2, seed=1)))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def saved(root: Path, models: dict[str, ClassModel]) -> Iterator[str]:
    root.mkdir()
    yield registry.save(root, KEY, models, {"source": "test"})


def test_every_class_is_trained_with_calibrated_thresholds(plant: PlantModel, models: dict[str, ClassModel]) -> None:
    assert set(models) == set(plant.classes)
    for model in models.values():
        assert model.calibration["calibration_rows"] > 1000
        assert all(value > 0 for value in model.thresholds.values())
        assert np.all(model.feature_thresholds >= 1.0)


def test_saved_model_scores_exactly_like_the_fitted_one(
    root: Path, saved: str, models: dict[str, ClassModel], plant: PlantModel
) -> None:
    loaded = registry.load(root, saved, KEY)
    rows = training.collect(plant, simulated(plant, START + 86400, 0.5, seed=2))
    for name, units in rows.items():
        features = np.vstack([np.vstack(blocks) for blocks in units.values()])
        assert np.array_equal(loaded[name].detect(features).score, models[name].detect(features).score)
    metadata = json.loads((root / saved / "metadata.json").read_text())
    assert metadata["training"] == {"source": "test"}
    assert {"numpy", "scikit-learn", "skops", "python"} <= set(metadata["libraries"])
    assert metadata["classes"]["laminator"]["tracks"] == {"pressure": "pressure_setpoint"}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_or_unsigned_artifacts_are_refused(root: Path, saved: str) -> None:
    with pytest.raises(registry.ModelVerificationError, match="signature"):
        registry.load(root, saved, b"another key")
    with pytest.raises(registry.ModelVerificationError, match="unknown"):
        registry.load(root, "20990101T000000Z", KEY)
    flip_byte(root / saved / "laminator.npz")
    with pytest.raises(registry.ModelVerificationError, match="SHA-256"):
        registry.load(root, saved, KEY)


def test_edited_thresholds_break_the_signature(root: Path, saved: str) -> None:
    path = root / saved / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["classes"]["dry_room"]["thresholds"]["t2"] *= 100  # silence an alarm
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    with pytest.raises(registry.ModelVerificationError, match="signature"):
        registry.load(root, saved, KEY)


class Smuggled:
    """Not a model: a type an attacker would like the loader to instantiate."""


def test_signed_artifact_with_foreign_types_is_refused(root: Path, saved: str) -> None:
    """Even with the key, nothing but the forest's own types is ever instantiated."""
    folder = root / saved
    skops.io.dump({"forest": Smuggled()}, folder / "dry_room.skops")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["classes"]["dry_room"]["files"]["skops"] = registry._sha256(folder / "dry_room.skops")
    body = json.dumps(metadata, indent=2, sort_keys=True).encode()
    (folder / "metadata.json").write_bytes(body)
    (folder / "signature").write_text(registry._sign(KEY, body))
    with pytest.raises(registry.ModelVerificationError, match="unexpected types"):
        registry.load(root, saved, KEY)


def test_rollout_hot_swaps_shadows_and_keeps_the_last_good_model(
    root: Path, saved: str, models: dict[str, ClassModel], plant: PlantModel
) -> None:
    model_set = ModelSet(root, KEY)
    registry.point(root, "ACTIVE", saved)
    model_set.refresh()
    assert model_set.active.version == saved
    engine = PlantScorer(plant)
    frames = [f for f in simulated(plant, START + 3 * 86400, 0.2, seed=3) if f.equipment_id == "S1-DRY-01"]
    produced = [m for frame in frames for m in scores_for(engine, model_set, frame)]
    assert produced and {m.role for m in produced} == {"active"}

    candidate = registry.save(root, KEY, {"dry_room": models["dry_room"]}, {"source": "candidate"})
    registry.point(root, "CANDIDATE", candidate)
    model_set.refresh()
    later = [f for f in simulated(plant, START + 3 * 86400 + 720, 0.05, seed=3) if f.equipment_id == "S1-DRY-01"]
    produced = [m for frame in later for m in scores_for(engine, model_set, frame)]
    assert {(m.role, m.model_version) for m in produced} == {("active", saved), ("shadow", candidate)}

    flip_byte(root / candidate / "dry_room.npz")
    registry.point(root, "ACTIVE", candidate)
    model_set.refresh()
    assert model_set.active.version == saved, "the last good model stays active"
    assert model_set.failures == 1
    model_set.refresh()
    assert model_set.failures == 1, "a refused version is reported once, not on every refresh"


def test_generic_csv_is_trained_on_and_scored(plant: PlantModel, tmp_path: Path) -> None:
    """A recording from another historian: its own column names, epoch or ISO times, a label column."""

    def write_csv(path: Path, hours: float, seed: int, fault_from: float | None) -> None:
        with path.open("w", newline="") as handle:
            out = csv.writer(handle)
            out.writerow(["Time", "DEW_PT", "H2S_PPM", "O2_PPM", "ROOM_T", "label"])
            rng = np.random.default_rng(seed)
            for i in range(int(hours * 3600)):
                fault = fault_from is not None and fault_from <= i < fault_from + 600
                ramp = min(i - fault_from, 300) / 300 * 12 if fault_from is not None and fault else 0.0
                dew = -48 + rng.normal(0, 0.35) + ramp
                out.writerow(
                    [
                        START + i,
                        f"{dew:.3f}",
                        f"{0.08 + rng.normal(0, 0.01):.4f}",
                        f"{209000 + rng.normal(0, 150):.1f}",
                        f"{21 + rng.normal(0, 0.1):.3f}",
                        "moisture" if fault else "",
                    ]
                )

    columns = {"DEW_PT": "dew_point", "H2S_PPM": "h2s", "O2_PPM": "o2", "ROOM_T": "temperature"}
    write_csv(tmp_path / "normal.csv", 3, 1, None)
    write_csv(tmp_path / "faulty.csv", 1, 2, 1800)
    [normal] = historian.csv_runs(historian.CsvMapping([tmp_path / "normal.csv"], "S2-DRY-01", "Time", columns), plant)
    model = training.fit(plant, training.collect(plant, normal.frames))["dry_room"]
    mapping = historian.CsvMapping([tmp_path / "faulty.csv"], "S2-DRY-01", "Time", columns, "label")
    [faulty] = historian.csv_runs(mapping, plant)
    traces = evaluate.score_stream(plant, faulty.frames, {"dry_room": model})
    trace = traces["S2-DRY-01"]
    hits = [t for t, a in zip(trace.ts, trace.anomalous, strict=True) if a]
    assert hits and START + 1800 <= hits[0] <= START + 1800 + 120
    assert all(START + 1800 <= t < START + 1800 + 600 + 300 for t in hits)
    assert sum(1 for _, fault in faulty.labels if fault) == 600
    assert faulty.unmapped_sensors == sorted({"airflow", "h2o_ppmv", "particle_count", "rel_pressure"})
    with pytest.raises(UsageError, match="no sensor"):
        historian.csv_runs(
            historian.CsvMapping([tmp_path / "normal.csv"], "S2-DRY-01", "Time", {"DEW_PT": "speed"}), plant
        )


def test_isolation_scores_equal_sklearn_score_samples(models: dict[str, ClassModel]) -> None:
    """The scorer's tree-by-tree forest scoring is sklearn's arithmetic, on normal rows and far-out ones."""
    from linewatch.services.scorer.models import isolation_scores

    rng = np.random.default_rng(3)
    for model in models.values():
        width = len(model.mean)
        rows = np.vstack([rng.normal(0, 1, (200, width)), rng.normal(0, 8, (50, width))])
        expected = -model.forest.score_samples(rows)
        assert np.allclose(isolation_scores(model.forest, rows), expected, rtol=0, atol=1e-12)
