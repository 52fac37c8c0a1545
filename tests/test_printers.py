"""Printer profiles: every shipped profile validates, cites its sources, and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.config import available, find_config
from pipeline.errors import ConfigError
from pipeline.printers import PrinterProfile, load_printer

REQUIRED = ["formlabs_form3b", "formlabs_form3bl", "formlabs_form4b", "stratasys_j750_digital_anatomy",
            "ultimaker_s5", "prusa_mk4"]
NUMBERED = ["build_volume_mm", "layer_height_mm", "critical_overhang_deg", "min_wall_mm",
            "min_feature_mm", "materials", "time", "support_fill_fraction"]


def test_required_printers_are_shipped():
    names = available("printers")
    assert set(REQUIRED) <= set(names)
    technologies = {load_printer(name).technology for name in names}
    assert {"sla", "polyjet", "fdm", "sls"} <= technologies


@pytest.mark.parametrize("name", available("printers"))
def test_profile_validates_and_cites_every_number(name):
    profile = load_printer(name)
    assert profile.name == name
    assert profile.default_material in profile.materials
    for field in NUMBERED:
        assert profile.sources.get(field), f"{name}: no source given for {field}"
    # The build volume a lab fills is bigger than the clearance it keeps.
    volume = profile.build_volume_mm
    assert min(volume.x, volume.y) > 2 * profile.clearance_mm
    assert volume.z > profile.support_base_mm


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "bad_printer.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def form3b_data() -> dict:
    return yaml.safe_load(find_config("printers", "formlabs_form3b").read_text())


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"layer_height_mm": -0.1}, "layer_height_mm"),
        ({"critical_overhang_deg": 120}, "critical_overhang_deg"),
        ({"build_volume_mm": {"x": 145, "y": 0, "z": 185}}, "build_volume_mm.y"),
        ({"technology": "laser_cutter"}, "technology"),
        ({"nozzle_temperature": 210}, "nozzle_temperature"),
    ],
)
def test_bad_value_names_the_field(tmp_path, form3b_data, change, field):
    path = _write(tmp_path, {**form3b_data, **change})
    with pytest.raises(ConfigError) as raised:
        load_printer(str(path))
    assert f"'{field}'" in str(raised.value)
    assert str(path) in str(raised.value)


def test_missing_field_and_bad_material_are_named(tmp_path, form3b_data):
    data = dict(form3b_data)
    del data["min_wall_mm"]
    with pytest.raises(ConfigError, match="'min_wall_mm'"):
        load_printer(str(_write(tmp_path, data)))
    data = {**form3b_data, "default_material": "unobtainium"}
    with pytest.raises(ConfigError, match="unobtainium"):
        load_printer(str(_write(tmp_path, data)))
    data = {**form3b_data, "materials": {"resin": {"density_g_per_ml": -1, "cost_per_liter": 10}},
            "default_material": "resin"}
    with pytest.raises(ConfigError, match="'materials.resin.density_g_per_ml'"):
        load_printer(str(_write(tmp_path, data)))


def test_unknown_printer_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown printer 'makerbot_1'"):
        load_printer("makerbot_1")


def test_profile_loads_by_name_or_path():
    profile = load_printer("prusa_mk4")
    assert isinstance(profile, PrinterProfile)
    assert load_printer(str(find_config("printers", "prusa_mk4"))) == profile
