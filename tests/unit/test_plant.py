from __future__ import annotations

from pathlib import Path

import pytest

from linewatch.core.plant import PlantModel, load_plant

REQUIRED_FAULTS = {
    "moisture_ingress",
    "h2s_rise",
    "mill_overheating",
    "furnace_overshoot",
    "lamination_pressure_loss",
    "weld_energy_drift",
    "seal_temperature_drop",
    "self_discharge_outlier",
    "sensor_stuck",
    "sensor_spike",
    "sensor_dropout",
    "sensor_drift",
}


def test_reference_plant_size_and_scope(plant: PlantModel) -> None:
    assert len(plant.equipment) >= 40
    assert plant.sensor_count() >= 300
    assert {a.kind for a in plant.areas} == {"electrolyte", "cell_assembly"}
    assert set(plant.faults) >= REQUIRED_FAULTS
    assert {
        "dry_room",
        "precursor_doser",
        "planetary_mill",
        "annealing_furnace",
        "conductivity_qc",
        "coater",
        "calender",
        "stacker",
        "laminator",
        "tab_welder",
        "pouch_sealer",
        "formation",
        "eol_tester",
    } <= set(plant.classes)


def test_every_sensor_has_consistent_ranges(plant: PlantModel) -> None:
    for class_name, spec in plant.classes.items():
        for name, sensor in spec.sensors.items():
            where = f"{class_name}.{name}"
            low, high = sensor.normal
            assert low < high, where
            lsl, usl = sensor.spec
            assert lsl is None or lsl <= low, f"{where}: normal range starts below LSL"
            assert usl is None or usl >= high, f"{where}: normal range ends above USL"
            assert sensor.unit, where
            if sensor.profile is None:
                assert low <= sensor.nominal <= high, f"{where}: nominal outside normal range"


def test_cell_lines_consume_from_existing_synthesis_lines(plant: PlantModel) -> None:
    for name, line in plant.lines.items():
        if line.consumes_from is not None:
            assert line.consumes_from in plant.lines, name


def test_bad_plant_files_are_refused(tmp_path: Path, plant: PlantModel) -> None:
    document = plant.model_dump(by_alias=True)
    document["areas"][0]["lines"][0]["equipment"][0]["class"] = "teleporter"
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ValueError, match="unknown class teleporter"):
        load_plant(path)


@pytest.mark.parametrize("name", ["jar temp", "jar,temp", "temp=1", '"temp"', "{temp}", "_temp"])
def test_sensor_names_follow_the_contract_name_rule(tmp_path: Path, plant: PlantModel, name: str) -> None:
    # The writer copies sensor names into line protocol as they are; these would need escaping.
    document = plant.model_dump(by_alias=True)
    sensors = next(iter(document["classes"].values()))["sensors"]
    sensors[name] = sensors.pop(next(iter(sensors)))
    path = tmp_path / "bad.yaml"
    import yaml

    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ValueError, match="pattern"):
        load_plant(path)
