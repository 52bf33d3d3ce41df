from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from linewatch.core.plant import PlantModel, load_plant
from linewatch.core.timeutil import parse_time
from linewatch.storage import historian
from linewatch.storage.historian import read_table
from linewatch.tools.plantfile import counts_rows, draft

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


# -- issue 13: the plant file for any plant: schema, addresses, validate ------------------------------------------


def test_the_schema_file_is_the_models_schema_and_accepts_the_reference_plant(plant: PlantModel) -> None:
    import json

    import jsonschema
    import yaml

    from linewatch.core.plant import json_schema
    from linewatch.core.settings import DEFAULT_PLANT_FILE, REPO_ROOT

    schema = json.loads((REPO_ROOT / "schemas" / "plant.v1.schema.json").read_text())
    assert schema == json_schema(), "regenerate schemas/plant.v1.schema.json from linewatch.core.plant.json_schema()"
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(DEFAULT_PLANT_FILE.read_text()))


def test_addresses_come_from_the_unit_then_the_sensor_then_the_plant_template(tmp_path: Path) -> None:
    import yaml

    document = {
        "site": "s1",
        "sources": {"opcua": "ns=2;s={equipment}.{sensor}", "sparkplug": "{site}/{line}/{equipment}/{sensor}"},
        "classes": {
            "press": {
                "sensors": {
                    "force": {"unit": "kN", "normal": [0, 10]},
                    "temp": {"unit": "degC", "normal": [0, 90], "source": {"opcua": "/2:{equipment}/2:Temperature"}},
                }
            }
        },
        "areas": [
            {
                "name": "a",
                "lines": [
                    {
                        "name": "l1",
                        "equipment": [
                            {
                                "class": "press",
                                "ids": ["P1", "P2"],
                                "sources": {"P2": {"force": {"opcua": "ns=3;i=17"}}},
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "plant.yaml"
    path.write_text(yaml.safe_dump(document))
    plant = load_plant(path)
    p1, p2 = plant.equipment
    assert plant.address(p1, "force", "opcua") == "ns=2;s=P1.force"
    assert plant.address(p2, "force", "opcua") == "ns=3;i=17"
    assert plant.address(p2, "temp", "opcua") == "/2:P2/2:Temperature"
    assert plant.address(p1, "temp", "sparkplug") == "s1/l1/P1/temp"
    assert plant.address(p1, "temp", "mqtt") is None


def test_plant_validate_names_the_line_and_field_of_each_mistake(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "plant.yaml"
    path.write_text(
        "site: x\nclasses:\n  press:\n    sensors:\n      force: {unit: kN, normal: [0, 10], deadband: -1}\nareas: []\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "linewatch.tools.cli", "plant", "validate", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 1
    assert f"{path}:5: classes.press.sensors.force.deadband: Input should be greater than or equal to 0" in done.stdout
    assert "Traceback" not in done.stderr


def test_a_draft_from_data_with_over_range_codes_takes_its_normal_range_from_the_readings(tmp_path: Path) -> None:
    # One reading in ten is an instrument's overload code: frequent enough to be inside the 99.9 % quantile.
    rows = [f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z,{9.9e37 if i % 10 == 0 else 20 + i % 7}" for i in range(600)]
    (tmp_path / "unit.csv").write_text("time,temperature\n" + "\n".join(rows) + "\n")
    document, _notes = draft([read_table(tmp_path / "unit.csv")], "OVEN1", None, decimal_comma=False)
    low, high = document["classes"]["oven1-class"]["sensors"]["temperature"]["normal"]
    assert 19 <= low <= 21 and 25 <= high <= 27


def wandering(rows: int, seed: int = 3) -> np.ndarray:
    """Three readings a row that go up and down: none of them is a time."""
    rng = np.random.default_rng(seed)
    return np.column_stack([20 + rng.normal(0, 0.2, rows), 40 + rng.normal(0, 0.5, rows), rng.normal(5, 1, rows)])


def test_a_file_without_times_is_taken_in_row_order_and_its_first_column_stays_a_sensor(
    plant: PlantModel, tmp_path: Path
) -> None:
    """Benchmark sets such as Tennessee Eastman have no time column: the first column was read as epoch seconds
    (1970, a sample every 0.002 s, rows shuffled by their readings) and lost as a sensor."""
    values = wandering(300)
    path = tmp_path / "plain.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.4f}" for v in row) for row in values) + "\n")
    document, notes = draft([read_table(path)], "U1", None, decimal_comma=False)
    assert list(document["classes"]["u1-class"]["sensors"]) == ["a", "b", "c"] and document["sample_period_s"] == 1
    assert any(note.startswith("no time column: rows taken as samples 1 s apart") for note in notes)
    # The same file as a run of a plant unit: samples 1 s apart, in the file's order.
    [run] = historian.csv_runs(historian.CsvMapping([path], "S2-DRY-01", columns={"a": "dew_point"}), plant)
    samples = [sample for frame in run.frames for sample in frame.samples]
    assert [s.values["dew_point"] for s in samples] == [round(v, 4) for v in values[:, 0]]
    assert {b.ts.timestamp() - a.ts.timestamp() for a, b in itertools.pairwise(samples)} == {1.0}
    assert run.notes[0].startswith("no time column") and run.unused_columns == ["b", "c"]


def test_times_from_a_date_and_a_time_column_and_files_with_no_header_or_with_spaces(tmp_path: Path) -> None:
    values = wandering(120)
    split = tmp_path / "split.csv"
    split.write_text(
        "Date;Time;a;b;c\n"
        + "\n".join(
            f"01.11.2026;10:{i // 6:02d}:{i % 6 * 10:02d};{v[0]:.3f};{v[1]:.3f};{v[2]:.3f}"
            for i, v in enumerate(values)
        )
        + "\n"
    )
    table = read_table(split)
    times = historian.row_times(table, None)
    assert times.name == "Date and Time" and times.of(table.rows[7], 7) - times.of(table.rows[0], 0) == 70
    document, _ = draft([table], "U1", None, decimal_comma=False)
    assert document["sample_period_s"] == 10 and list(document["classes"]["u1-class"]["sensors"]) == ["a", "b", "c"]
    assert parse_time("28/12/2015 10:00:05 PM") == datetime(2015, 12, 28, 22, 0, 5, tzinfo=UTC)  # a SCADA export's
    wadi = tmp_path / "wadi.csv"  # WADI's layout: a row number, a month-first date, a 12-hour clock with fractions
    wadi.write_text(
        "Row,Date,Time,1_AIT_001_PV\n"
        + "\n".join(f"{i + 1},9/25/2017,6:00:{i:02d}.000 PM,{v[0]:.3f}" for i, v in enumerate(values[:60]))
        + "\n"
    )
    table = read_table(wadi)
    times = historian.row_times(table, None)
    assert times.month_first and "read month first" in (times.note() or "")
    assert times.of(table.rows[1], 1) == datetime(2017, 9, 25, 18, 0, 1, tzinfo=UTC).timestamp()
    document, notes = draft([table], "U1", None, decimal_comma=False)
    assert list(document["classes"]["u1-class"]["sensors"]) == ["1_AIT_001_PV"] and document["sample_period_s"] == 1
    assert "column 'Row' counts rows (an index): not a sensor" in notes and any("month first" in n for n in notes)
    assert not historian.row_times(read_table(split), None).month_first  # 01.11.2026: no slashes, day first
    wadi.write_text(wadi.read_text().replace("9/25/2017", "25/9/2017"))  # the same written day first
    table = read_table(wadi)
    times = historian.row_times(table, None)
    assert (
        not times.month_first and times.of(table.rows[1], 1) == datetime(2017, 9, 25, 18, 0, 1, tzinfo=UTC).timestamp()
    )
    spaced = tmp_path / "d00.dat"  # columns aligned with spaces, no header
    spaced.write_text("\n".join("  ".join(f"{v:.5e}" for v in row) for row in values) + "\n")
    table = read_table(spaced)
    assert table.header == ["column_1", "column_2", "column_3"] and len(table.rows) == 120
    assert historian.row_times(table, None).columns == ()


def test_a_label_or_an_index_column_is_neither_the_time_nor_a_sensor(tmp_path: Path) -> None:
    """Laid out like a public Tennessee Eastman export: label first (all 0: no time), then a run number and a sample
    index; the index, a sensor, would be out of its range on every fresh row."""
    values = wandering(200)
    path = tmp_path / "tep.csv"
    rows = [f"0,1,{i + 1},{v[0]:.4f},{v[1]:.4f},{v[2]:.4f}" for i, v in enumerate(values)]
    path.write_text("faultNumber,simulationRun,sample,xmeas_1,xmeas_2,xmeas_3\n" + "\n".join(rows) + "\n")
    document, notes = draft([read_table(path)], "U1", None, decimal_comma=False)
    assert list(document["classes"]["u1-class"]["sensors"]) == ["xmeas_1", "xmeas_2", "xmeas_3"]
    assert "column 'sample' counts rows (an index): not a sensor" in notes
    # A counter that rises by uneven steps (a totalizer) is a reading; an epoch-time first column is the time.
    assert not counts_rows(np.cumsum(np.random.default_rng(1).uniform(0.5, 1.5, 200)))
    epoch = tmp_path / "epoch.csv"
    epoch.write_text("t_s,x\n" + "\n".join(f"{1_790_000_000 + 5 * i},{v[0]:.3f}" for i, v in enumerate(values)) + "\n")
    assert historian.row_times(read_table(epoch), None).columns == (0,)


def test_an_exports_comments_preamble_and_unit_row_are_left_out_and_said(tmp_path: Path) -> None:
    """Historian exports put lines above the header (what, from where) and units under it: the preamble misled
    the delimiter and the unit row was read as a row with no time ("'' is not a time")."""
    values = wandering(60)
    path = tmp_path / "export.csv"
    path.write_text(
        "# exported 2026-11-02\nExport;Historian\nStart;2026-11-01\n\nTime,a,b,c\n,degC,bar,m3/h\n"
        + "\n".join(f"2026-11-01 10:00:{i:02d},{v[0]:.3f},{v[1]:.3f},{v[2]:.3f}" for i, v in enumerate(values))
        + "\n"
    )
    table = read_table(path)
    assert table.header == ["Time", "a", "b", "c"] and len(table.rows) == 60 and table.rows[0][0].endswith(":00")
    assert table.notes == [
        "2 line(s) above the header left out (an export's preamble)",
        "1 row(s) under the header without a number left out (units)",
    ]
    document, notes = draft([table], "U1", None, decimal_comma=False)
    assert (
        list(document["classes"]["u1-class"]["sensors"]) == ["a", "b", "c"] and notes[: len(table.notes)] == table.notes
    )
