"""Scorer: features in samples, calibration, signed artifacts, rollout, evaluation's definitions, CSV runs."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import shutil
from pathlib import Path

import msgspec
import numpy as np
import pytest
import skops.io
import yaml

from linewatch.core.commandline import UsageError
from linewatch.core.contract import AnomalyScores, TelemetryFrame
from linewatch.core.plant import PlantModel, load_plant
from linewatch.services.scorer import evaluate, registry, training
from linewatch.services.scorer.agents import scores_for
from linewatch.services.scorer.commands import describe
from linewatch.services.scorer.engine import PlantScorer
from linewatch.services.scorer.features import SMOOTH_WARMUP, FeatureLayout, StreamState, stream_block
from linewatch.services.scorer.models import ClassModel, FlatForest, Targets, calibrate, pick, tail_threshold
from linewatch.services.scorer.rollout import ModelSet
from linewatch.simulation.faults import plan_injection
from linewatch.simulation.plant_sim import simulated
from linewatch.storage import historian
from linewatch.tools import corpus, plantfile

KEY = b"test-signing-key"
START = math.floor(1_790_000_000 / 7200) * 7200  # fixed: runs are reproducible
CLASSES = ("dry_room", "laminator")  # a white-noise class and one with a press cycle and a tracked setpoint


@pytest.fixture(scope="module")
def models(plant: PlantModel) -> dict[str, ClassModel]:
    frames = (f for f in simulated(plant, START, 1.5, seed=1) if f.equipment_class in CLASSES)
    fitted, refused = training.fit(plant, training.collect(plant, frames))
    assert not refused
    return fitted


@pytest.fixture(scope="module")
def saved(models: dict[str, ClassModel], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("registry")
    return root, registry.save(root, KEY, models, {"source": "test"})


@pytest.fixture
def root(saved: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the saved registry that a test may tamper with."""
    copy = tmp_path / "registry"
    shutil.copytree(saved[0], copy)
    return copy


def block_of(plant: PlantModel, model: ClassModel, unit: str, hours: float, seed: int) -> object:
    [stream] = training.collect(
        plant, (f for f in simulated(plant, START + 86400, hours, seed) if f.equipment_id == unit)
    )[model.equipment_class][:1]
    return stream_block(StreamState(), model.layout, stream.values, stream.provided, stream.ts, model.period_s)


def test_models_are_calibrated_to_the_targets_and_say_how(models: dict[str, ClassModel]) -> None:
    assert set(CLASSES) <= set(models)
    for model in models.values():
        c = model.calibration
        assert c["rows"] >= 1000 and c["threshold"] == model.threshold > 0
        assert c["held_out_false_alarm_pct"] <= c["target_false_alarm_pct"]
        assert c["bound_by"] in ("false-alarm rate", "false alerts per week") and c["period_s"] == 1.0
        assert 1 <= c["components"] < c["features"]
    assert models["laminator"].layout.tracks == {"pressure": "pressure_setpoint"}


def test_saved_model_scores_exactly_like_the_fitted_one(
    saved: tuple[Path, str], models: dict[str, ClassModel], plant: PlantModel
) -> None:
    root, version = saved
    loaded = registry.load(root, version, KEY)
    for name in CLASSES:
        unit = next(e.id for e in plant.equipment if e.equipment_class == name)
        block = block_of(plant, models[name], unit, 0.3, 2)
        assert np.array_equal(loaded[name].detect(block).score, models[name].detect(block).score)  # type: ignore[arg-type]
    metadata = json.loads((root / version / "metadata.json").read_text())
    assert metadata["training"] == {"source": "test"}
    assert {"numpy", "scikit-learn", "skops", "python"} <= set(metadata["libraries"])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_tampered_or_unsigned_artifacts_are_refused(root: Path, saved: tuple[Path, str]) -> None:
    version = saved[1]
    with pytest.raises(registry.ModelVerificationError, match="signature"):
        registry.load(root, version, b"another key")
    with pytest.raises(registry.ModelVerificationError, match="unknown"):
        registry.load(root, "20990101T000000Z", KEY)
    flip_byte(root / version / "laminator.npz")
    with pytest.raises(registry.ModelVerificationError, match="SHA-256"):
        registry.load(root, version, KEY)


def test_edited_thresholds_break_the_signature(root: Path, saved: tuple[Path, str]) -> None:
    path = root / saved[1] / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["classes"]["dry_room"]["threshold"] *= 100  # silence an alarm
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    with pytest.raises(registry.ModelVerificationError, match="signature"):
        registry.load(root, saved[1], KEY)


class Smuggled:
    """Not a model: a type an attacker would like the loader to instantiate."""


def test_signed_artifact_with_foreign_types_is_refused(root: Path, saved: tuple[Path, str]) -> None:
    """Even with the key, nothing but the forest's own types is ever instantiated."""
    folder = root / saved[1]
    skops.io.dump({"forest": Smuggled()}, folder / "dry_room.skops")
    metadata = json.loads((folder / "metadata.json").read_text())
    metadata["classes"]["dry_room"]["files"]["skops"] = registry._sha256(folder / "dry_room.skops")
    body = json.dumps(metadata, indent=2, sort_keys=True).encode()
    (folder / "metadata.json").write_bytes(body)
    (folder / "signature").write_text(registry._sign(KEY, body))
    with pytest.raises(registry.ModelVerificationError, match="unexpected types"):
        registry.load(root, saved[1], KEY)


def test_rollout_hot_swaps_shadows_and_keeps_the_last_good_model(
    root: Path, saved: tuple[Path, str], models: dict[str, ClassModel], plant: PlantModel
) -> None:
    version = saved[1]
    model_set = ModelSet(root, KEY)
    registry.point(root, "ACTIVE", version)
    model_set.refresh()
    assert model_set.active.version == version
    engine = PlantScorer(plant)
    frames = [f for f in simulated(plant, START + 3 * 86400, 0.1, seed=3) if f.equipment_id == "S1-DRY-01"]
    produced = [m for frame in frames for m in scores_for(engine, model_set, [frame])[0]]
    assert produced and {m.role for m in produced} == {"active"}

    candidate = registry.save(root, KEY, {"dry_room": models["dry_room"]}, {"source": "candidate"})
    registry.point(root, "CANDIDATE", candidate)
    model_set.refresh()
    later = [f for f in simulated(plant, START + 3 * 86400 + 360, 0.05, seed=3) if f.equipment_id == "S1-DRY-01"]
    produced = [m for frame in later for m in scores_for(engine, model_set, [frame])[0]]
    assert {(m.role, m.model_version) for m in produced} == {("active", version), ("shadow", candidate)}

    flip_byte(root / candidate / "dry_room.npz")
    registry.point(root, "ACTIVE", candidate)
    model_set.refresh()
    assert model_set.active.version == version, "the last good model stays active"
    assert model_set.failures == 1
    model_set.refresh()
    assert model_set.failures == 1, "a refused version is reported once, not on every refresh"


def test_flat_forest_scores_equal_sklearn_score_samples(models: dict[str, ClassModel]) -> None:
    """The scorer's flat forest walk is sklearn's arithmetic, on normal rows and far-out ones, one row or more
    than a chunk at a time."""
    rng = np.random.default_rng(3)
    for model in models.values():
        width = len(model.mean)
        rows = np.vstack([rng.normal(0, 1, (400, width)), rng.normal(0, 8, (100, width))])
        expected = -model.forest.score_samples(rows)
        flat = FlatForest.of(model.forest)
        assert np.allclose(flat.scores(rows), expected, rtol=0, atol=1e-12)
        assert np.allclose(flat.scores(rows[-1:]), expected[-1:], rtol=0, atol=1e-12)


# -- features count samples, not seconds ---------------------------------------------------------------------


def test_features_stream_the_same_whatever_the_frame_boundaries() -> None:
    layout = FeatureLayout(["a", "b", "sp"], {"a": "sp"}, lags=1)
    rng = np.random.default_rng(1)
    values, ts = rng.normal(0, 1, (250, 3)), 1_700_000_000 + 180.0 * np.arange(250)
    whole = stream_block(StreamState(), layout, values, np.ones(3, bool), ts, 180.0)
    state = StreamState()
    parts = [
        stream_block(state, layout, values[i : i + 37], np.ones(3, bool), ts[i : i + 37], 180.0)
        for i in range(0, 250, 37)
    ]
    for name in ("features", "smoothed", "rates", "roughness", "unchanged", "warm", "smooth_warm"):
        assert np.allclose(np.concatenate([getattr(p, name) for p in parts]), getattr(whole, name), equal_nan=True), (
            name
        )
    # 3-minute sampling: every sample after the first two (one lag) is scored; only a gap of five periods resets.
    assert whole.warm.sum() == 248 and whole.smooth_warm.sum() == 250 - SMOOTH_WARMUP
    gapped = ts.copy()
    gapped[100:] += 4 * 180.0
    assert stream_block(StreamState(), layout, values, np.ones(3, bool), gapped, 180.0).warm.sum() == 248
    gapped[100:] += 2 * 180.0
    assert stream_block(StreamState(), layout, values, np.ones(3, bool), gapped, 180.0).warm.sum() == 246


def test_a_stuck_sensor_counts_unchanged_samples() -> None:
    values = np.column_stack([np.arange(10.0), [1.0, 2, 2, 2, 2, 3, 3, np.nan, 3, 4]])
    block = stream_block(StreamState(), FeatureLayout(["x", "y"]), values, np.ones(2, bool), np.arange(10.0), 1.0)
    assert block.unchanged[:, 1].tolist() == [0, 0, 1, 2, 3, 0, 1, 2, 3, 0]  # a missing value changes nothing
    assert block.missing[7].tolist() == [False, True] and not block.unchanged[:, 0].any()


# -- calibration -------------------------------------------------------------------------------------------


def test_tail_threshold_is_empirical_where_the_data_show_the_rate_and_extrapolated_beyond() -> None:
    values = np.random.default_rng(2).exponential(1.0, 20_000)
    level, extrapolated = tail_threshold(values, 0.01)
    assert not extrapolated and abs(level - math.log(100)) < 0.2
    level, extrapolated = tail_threshold(values[:500], 0.001)
    assert extrapolated and level > np.quantile(values[:500], 0.99)  # beyond what 500 values show, upward


def corpus_model(name: str, seed: int) -> tuple[ClassModel, corpus.Run]:
    """Trained on one of `bench detection`'s processes as training does (one run, lagged); and its fresh run."""
    process = next(p for p in corpus.PROCESSES if p.name == name)
    train, fresh, _ = corpus.datasets(process, seed)
    layout = FeatureLayout([f"v{i}" for i in range(process.variables)], lags=1)
    block = stream_block(
        StreamState(), layout, train.values, np.ones(process.variables, bool), train.ts, process.period_s
    )
    warm = block.take(np.flatnonzero(block.warm))
    model = calibrate(name, None, layout, process.period_s, warm, [len(warm.features)], targets=Targets())
    return model, fresh


def test_the_smoothed_spe_is_left_out_where_too_few_independent_rows_calibrate_it(tmp_path: Path) -> None:
    """300 rows of a slowly wandering process: the smoothed SPE's held-out values rest on a handful of independent
    rows, and on fresh data it alarmed on 18 % of the samples (docs/benchmarks.md); 3,000 rows keep it."""
    short, fresh = corpus_model("kiln-5min", 2)
    assert short.left_out == ["spe_smooth"] and short.calibration["smooth_spe_effective_rows"] < 30
    assert "smoothed SPE is left out" in describe(short)
    block = stream_block(StreamState(), short.layout, fresh.values, np.ones(8, bool), fresh.ts, short.period_s)
    parts = short.parts(block)
    parts["spe_smooth"] = np.full(len(fresh.ts), 1e9)  # whatever it says, it decides nothing
    assert np.array_equal(short.combined(parts)["drift"], parts["bias"] / short.normalizers["bias"])
    version = registry.save(tmp_path, KEY, {"kiln": short}, {"source": "test"})
    assert registry.load(tmp_path, version, KEY)["kiln"].left_out == ["spe_smooth"]
    long, _ = corpus_model("press-1s", 0)
    assert long.left_out == [] and long.calibration["smooth_spe_effective_rows"] >= 30
    assert "smoothed SPE" not in describe(long)


def test_too_little_data_is_refused_with_what_the_model_needs(plant: PlantModel) -> None:
    first = next(f for f in simulated(plant, START, 0.1, seed=1) if f.equipment_id == "S1-DRY-01")
    frames = [msgspec.structs.replace(first, samples=first.samples[:50])]
    fitted, refused = training.fit(plant, training.collect(plant, frames))
    assert not fitted
    [reason] = refused
    assert reason.startswith("dry_room: ") and "needs at least" in reason and "five per feature" in reason


def test_run_contexts_get_their_own_model_where_there_is_data(models: dict[str, ClassModel]) -> None:
    model = models["dry_room"]
    context = dataclasses.replace(model, context="EXP-2")
    chosen = {model.key: model, context.key: context}
    assert context.key == "dry_room@EXP-2"
    assert pick(chosen, "dry_room", "EXP-2") is context and pick(chosen, "dry_room", "EXP-9") is model
    assert pick(chosen, "dry_room", None) is model and pick(chosen, "stacker", None) is None
    ran = dataclasses.replace(model, recipes_not_learned=["EXP-9"])
    assert pick({ran.key: ran}, "dry_room", "EXP-1") is ran, "pooled, and it ran that recipe"
    assert pick({ran.key: ran}, "dry_room", "run-17") is ran, "a context that is no recipe of the plant's"
    assert pick({ran.key: ran}, "dry_room", "EXP-9") is None, "a recipe of the plant's that its training never ran"
    assert Targets().false_alarm_rate == 0.005


def test_a_recipe_the_model_never_learned_is_not_scored_and_is_reported_once(
    plant: PlantModel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def labelled(frames: list[TelemetryFrame], recipe: str) -> list[TelemetryFrame]:
        return [msgspec.structs.replace(frame, recipe=recipe) for frame in frames]

    dry_room = plant.classes["dry_room"].model_copy(update={"recipes": {"EXP-1": {}, "EXP-9": {}}})
    plant = plant.model_copy(update={"classes": plant.classes | {"dry_room": dry_room}})
    trained_on = [f for f in simulated(plant, START, 1.0, seed=1) if f.equipment_class == "dry_room"]
    fitted, _ = training.fit(plant, training.collect(plant, labelled(trained_on, "EXP-1")))
    registry.point(tmp_path, "ACTIVE", registry.save(tmp_path, KEY, fitted, {"source": "test"}))
    model_set = ModelSet(tmp_path, KEY)
    model_set.refresh()
    assert model_set.active.models["dry_room"].recipes_not_learned == ["EXP-9"]  # saved, signed and loaded
    later = [f for f in simulated(plant, START + 86400, 0.1, seed=3) if f.equipment_id == "S1-DRY-01"]
    with caplog.at_level(logging.WARNING, logger="linewatch.services.scorer.rollout"):
        unlearned = scores_for(PlantScorer(plant), model_set, labelled(later, "EXP-9"))
    assert not any(unlearned)
    assert [r.getMessage() for r in caplog.records].count(
        "recipe not learned, its frames are not scored: train on normal running data of it"
    ) == 1
    assert any(scores_for(PlantScorer(plant), model_set, labelled(later, "EXP-1")))
    assert any(scores_for(PlantScorer(plant), model_set, labelled(later, "run-17"))), "no recipe: more of the same"


# -- evaluation ------------------------------------------------------------------------------------------------


def test_every_sample_counts_and_f1_has_one_definition() -> None:
    trace = evaluate.Trace(
        ts=[float(t) for t in range(10)],
        scored=[False, True, True, True, True, True, True, True, True, True],
        anomalous=[False, False, True, False, False, False, True, True, False, False],
    )
    labels = {float(t): t in (5, 6, 7, 8, 9) for t in range(12)}  # two rows with no sample at all: unscored
    report = evaluate.Report()
    report.add_labelled(trace, labels)
    counts = report.total
    assert (counts.samples, counts.scored, counts.tp, counts.fp, counts.fn, counts.tn) == (12, 9, 2, 1, 3, 6)
    assert counts.delays == [1] and counts.segments == 1
    assert math.isclose(counts.f1, 2 / (2 + 4 / 2)) and math.isclose(counts.far_pct, 100 / 7)
    assert counts.line() == "samples=12 scored_pct=75.00 far_pct=14.29 mar_pct=60.00 f1=0.500 median_delay_samples=1"


# -- CSV runs ------------------------------------------------------------------------------------------------


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
    write_csv(tmp_path / "normal.csv", 2, 1, None)
    write_csv(tmp_path / "faulty.csv", 1, 2, 1800)
    [normal] = historian.csv_runs(historian.CsvMapping([tmp_path / "normal.csv"], "S2-DRY-01", "Time", columns), plant)
    fitted, _ = training.fit(plant, training.collect(plant, normal.frames))
    mapping = historian.CsvMapping([tmp_path / "faulty.csv"], "S2-DRY-01", "Time", columns, "label")
    [faulty] = historian.csv_runs(mapping, plant)
    trace = evaluate.score_stream(plant, faulty.frames, fitted)["S2-DRY-01"]
    hits = [t for t, a in zip(trace.ts, trace.anomalous, strict=True) if a]
    assert hits and START + 1800 <= hits[0] <= START + 1800 + 120
    assert all(START + 1800 <= t < START + 1800 + 600 + 300 for t in hits)
    assert sum(1 for _, fault in faulty.labels if fault) == 600
    assert faulty.unmapped_sensors == sorted({"airflow", "h2o_ppmv", "particle_count", "rel_pressure"})
    with pytest.raises(UsageError, match="no sensor"):
        wrong = historian.CsvMapping([tmp_path / "normal.csv"], "S2-DRY-01", "Time", {"DEW_PT": "speed"})
        historian.csv_runs(wrong, plant)


def test_csv_dialects_labels_and_mistakes(plant: PlantModel, tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    rows = ["Zeit;DEW_PT;H2S_PPM;Stoerung"] + [
        f"01.11.2026 10:{m:02d}:00;-48,{m % 10};0,08;{'1.0' if m > 40 else '0.0'}" for m in range(50)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    columns = {"DEW_PT": "dew_point", "H2S_PPM": "h2s"}
    with pytest.raises(UsageError, match="decimal-comma"):
        historian.csv_runs(historian.CsvMapping([path], "S2-DRY-01", "Zeit", columns), plant)
    mapping = historian.CsvMapping([path], "S2-DRY-01", "Zeit", columns, "Stoerung", decimal_comma=True)
    [run] = historian.csv_runs(mapping, plant)
    assert run.frames[0].samples[3].values == {"dew_point": -48.3, "h2s": 0.08}
    assert run.frames[0].recipe == "export"  # the file is the run's context
    assert sum(fault for _, fault in run.labels) == 9 and len(run.labels) == 50
    with pytest.raises(UsageError, match="no mapped column 'DEW_PTT'; its columns are: 'Zeit', 'DEW_PT'"):
        historian.csv_runs(historian.CsvMapping([path], "S2-DRY-01", "Zeit", {"DEW_PTT": "dew_point"}), plant)
    assert [historian.is_fault(text) for text in ("0.0", "0", "", "normal", "1.0", "2", "valve closed")] == [
        False, False, False, False, True, True, True,
    ]  # fmt: skip


def valve_rig(path: Path, rows: int, seed: int, silent: tuple[int, int] | None = None, every: int = 1) -> None:
    """A valve that opens and closes every 100 s, a pressure that follows it; the pressure written
    every `every` rows (blank between) and not at all over `silent`."""
    rng = np.random.default_rng(seed)
    valve = (np.arange(rows) // 100 + (rng.random() < 0.5)) % 2
    pressure = 1.2 + 0.3 * valve + rng.normal(0, 0.02, rows)
    lines = ["Time,valve,pressure,temperature"]
    for i in range(rows):
        blank = i % every or (silent is not None and silent[0] <= i < silent[1])
        lines.append(f"{START + i},{valve[i]},{'' if blank else f'{pressure[i]:.3f}'},{25 + rng.normal(0, 0.1):.3f}")
    path.write_text("\n".join(lines) + "\n")


def test_a_rig_export_sparse_columns_held_silences_not_learnt_states_never_stuck(
    tmp_path: Path,
) -> None:
    """An export that writes a sensor every 10th row is held between its readings (each blank was a missing
    sensor: 72 % of such a file's rows alarmed); a dense sensor silent for 400 of 3,000 training rows is held 5
    rows, then missing, and training leaves those rows out (learnt as normal, the held value loosened the model
    until it missed a 7-sigma shift). The valve reports a state: never stuck."""
    valve_rig(tmp_path / "sparse.csv", 300, 1, every=10)
    [table] = plantfile.read_tables([tmp_path / "sparse.csv"])
    document, _ = plantfile.draft([table], "RIG1", None, decimal_comma=False)
    assert list(document["classes"]["rig1-class"]["sensors"]) == ["valve", "pressure", "temperature"]
    (tmp_path / "rig.yaml").write_text(yaml.safe_dump(document))
    rig = load_plant(tmp_path / "rig.yaml")
    [sparse] = historian.csv_runs(historian.CsvMapping([tmp_path / "sparse.csv"], "RIG1"), rig)
    samples = [s for frame in sparse.frames for s in frame.samples]
    assert (
        all("pressure" in s.values for s in samples)
        and samples[15].values["pressure"] == samples[10].values["pressure"]
    )
    column = np.array([np.nan, 1.0, np.nan, 2.0, np.nan, 3.0] + [np.nan] * 15)  # a reading every 2 rows: 10 held
    assert np.array_equal(historian.held(column), [np.nan, 1, 1, 2, 2] + [3] * 11 + [np.nan] * 5, equal_nan=True)

    def fitted(name: str, silent: tuple[int, int] | None) -> ClassModel:
        valve_rig(tmp_path / f"{name}.csv", 3000, 2, silent)
        [run] = historian.csv_runs(historian.CsvMapping([tmp_path / f"{name}.csv"], "RIG1"), rig)
        models, refused = training.fit(rig, training.collect(rig, run.frames), contexts="pooled")
        assert not refused
        return models["rig1-class"]

    whole, gapped = fitted("whole", None), fitted("gapped", (1000, 1400))
    assert whole.calibration["rows"] - gapped.calibration["rows"] == 400 - 5 + SMOOTH_WARMUP
    assert np.allclose(gapped.scale, whole.scale, rtol=0.1)  # the pressure's spread is its own, not the held value's
    # The valve reports a state: it may stay closed as long as the process wants, never "stuck" (a valve closed
    # three times longer than in training flagged half of a fresh file's rows).
    limits = dict(zip(whole.layout.sensors, whole.stuck_limit.tolist(), strict=True))
    assert limits["valve"] == np.inf and math.isfinite(limits["pressure"]) and math.isfinite(limits["temperature"])
    (tmp_path / "registry").mkdir()
    version = registry.save(tmp_path / "registry", KEY, {"rig1-class": whole}, {"source": "test"})
    assert np.array_equal(
        registry.load(tmp_path / "registry", version, KEY)["rig1-class"].stuck_limit, whole.stuck_limit
    )


def test_frames_scored_in_batches_score_as_one_by_one(root: Path, saved: tuple[Path, str], plant: PlantModel) -> None:
    registry.point(root, "ACTIVE", saved[1])
    model_set = ModelSet(root, KEY)
    model_set.refresh()
    start = START + 3 * 86400
    fault = plan_injection(plant, "lamination_pressure_loss", None, start + 900, np.random.default_rng(1))
    frames = list(simulated(plant, start, 0.5, seed=5, injections=[fault]))
    # A stop right after a frame that begins in an alarm run: the batch must decide that frame before the stop
    # clears the unit's debounce.
    reference = PlantScorer(plant)
    carried = [
        i
        for i, frame in enumerate(frames)
        for result in scores_for(reference, model_set, [frame])[0]
        if frame.equipment_id == fault.equipment_id and result.samples[0].anomalous
    ]
    assert len(carried) > 2, "the fault makes alarm runs that carry across frames"
    stop = next(i for i, f in enumerate(frames) if i > carried[1] and f.equipment_id == fault.equipment_id)
    frames[stop] = msgspec.structs.replace(frames[stop], state="idle")
    single, batched = PlantScorer(plant), PlantScorer(plant)
    one_by_one = [scores_for(single, model_set, [frame])[0] for frame in frames]
    in_batches = [r for i in range(0, len(frames), 500) for r in scores_for(batched, model_set, frames[i : i + 500])]
    assert len(in_batches) == len(one_by_one)

    def flat(results: list[list[AnomalyScores]]) -> list[tuple[str, float, float, bool]]:
        return [
            (r.equipment_id, s.ts.timestamp(), s.score, s.anomalous) for rs in results for r in rs for s in r.samples
        ]

    expected, got = flat(one_by_one), flat(in_batches)
    assert sum(anomalous for *_, anomalous in expected) > 0, "some samples are anomalous, so the debounce is tested"
    assert [(u, t, a) for u, t, _, a in got] == [(u, t, a) for u, t, _, a in expected]
    assert np.allclose([s for _, _, s, _ in got], [s for _, _, s, _ in expected], atol=1e-3)


def test_rows_from_another_historian_leave_out_over_range_codes(plant: PlantModel) -> None:
    ns = 1_767_225_600 * 10**9
    rows: list[list[object]] = [
        [ns, 9.9e37, 0.1],
        [ns + 10**9, -3.4028235e38, 3.4028235e38],
        [ns + 2 * 10**9, -45.0, 0.2],
    ]
    [frame] = historian.frames_from_rows(plant, "S1-DRY-01", ["time", "dew_point", "h2s"], rows)
    assert [s.values for s in frame.samples] == [{"h2s": 0.1}, {"dew_point": -45.0, "h2s": 0.2}]
