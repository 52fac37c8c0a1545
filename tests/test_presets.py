"""Structure presets: every shipped preset validates, bad values are refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import available
from pipeline.errors import ConfigError
from pipeline.presets import apply_overrides, load_preset

SHIPPED = ["aorta_cta", "heart_bloodpool_cta", "pulmonary_artery_cta", "bone_ct", "custom_example"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_presets_validate_and_explain_their_window(name):
    preset = load_preset(name)
    assert name in available("presets")
    assert preset.name == name
    assert preset.threshold.lower_hu < preset.threshold.upper_hu
    assert len(preset.threshold.reason.split()) >= 10, "each HU window says why"


def test_contrast_presets_separate_bone_above_their_window():
    for name in ["aorta_cta", "heart_bloodpool_cta", "pulmonary_artery_cta"]:
        preset = load_preset(name)
        assert preset.bone_separation.enabled
        assert preset.bone_separation.cortical_hu >= preset.threshold.upper_hu


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


BASE = """
name: mine
structure: vessel
threshold:
  lower_hu: {lower}
  upper_hu: {upper}
  reason: test window
"""


def test_preset_from_a_path(tmp_path):
    preset = load_preset(_write(tmp_path, BASE.format(lower=100, upper=600)))
    assert (preset.threshold.lower_hu, preset.threshold.upper_hu) == (100, 600)


def test_lower_above_upper_is_refused_with_the_field(tmp_path):
    path = _write(tmp_path, BASE.format(lower=700, upper=200))
    with pytest.raises(ConfigError) as caught:
        load_preset(path)
    message = str(caught.value)
    assert str(path) in message and "threshold" in message and "lower_hu" in message


def test_out_of_range_hu_and_unknown_field_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="threshold.lower_hu"):
        load_preset(_write(tmp_path, BASE.format(lower=-5000, upper=200)))
    with pytest.raises(ConfigError, match="colour"):
        load_preset(_write(tmp_path, BASE.format(lower=100, upper=200) + "colour: red\n"))


def test_bone_threshold_inside_the_window_is_refused(tmp_path):
    text = BASE.format(lower=200, upper=700) + "bone_separation:\n  enabled: true\n  cortical_hu: 150\n"
    with pytest.raises(ConfigError, match="cortical_hu"):
        load_preset(_write(tmp_path, text))


def test_unquoted_yaml_off_means_leak_control_off(tmp_path):
    preset = load_preset(_write(tmp_path, BASE.format(lower=100, upper=600) + "leak_control:\n  mode: off\n"))
    assert preset.leak_control.mode == "off"


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="aorta_cta"):
        load_preset("no_such_preset")


def test_overrides_are_applied_and_validated():
    preset = load_preset("aorta_cta")
    changed = apply_overrides(preset, {"threshold.lower_hu": 150, "leak_control": {"neck_ratio": 0.6}})
    assert changed.threshold.lower_hu == 150 and changed.leak_control.neck_ratio == 0.6
    assert changed.threshold.upper_hu == preset.threshold.upper_hu
    with pytest.raises(ConfigError, match="lower_hu"):
        apply_overrides(preset, {"threshold.lower_hu": 900})
