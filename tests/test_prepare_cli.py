"""``anatomodel prepare``: a thin layer over plan_print and write_print_files."""

from __future__ import annotations

import json

import trimesh

from pipeline.cli import main
from pipeline.errors import ConfigError, HeldForReview


def _l_bracket_stl(tmp_path):
    mesh = trimesh.creation.box([60, 10, 30]).apply_translation([30, 5, 15]).union(
        trimesh.creation.box([10, 40, 30]).apply_translation([5, 20, 15]))
    path = tmp_path / "model.stl"
    mesh.export(path)
    return path, mesh


def test_prepare_writes_the_three_files(tmp_path, capsys):
    path, mesh = _l_bracket_stl(tmp_path)
    out = tmp_path / "print"
    code = main(["prepare", str(path), "--printer", "prusa_mk4", "--out", str(out), "--json"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "print.3mf", "print.stl"]
    plan = json.loads((out / "plan.json").read_text())
    assert plan == json.loads(capsys.readouterr().out)
    assert plan["printer"] == "prusa_mk4" and plan["fits"] is True
    printed = trimesh.load(out / "print.stl")
    assert abs(printed.volume - mesh.volume) < 1e-6 * mesh.volume
    assert abs(printed.bounds[0, 2]) < 1e-4


def test_unknown_printer_exits_with_the_config_error_code(tmp_path, capsys):
    path, _ = _l_bracket_stl(tmp_path)
    code = main(["prepare", str(path), "--printer", "no_such_printer", "--out", str(tmp_path / "x")])
    assert code == ConfigError.exit_code
    assert "unknown printer 'no_such_printer'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_model_that_fits_in_no_orientation_is_written_and_held_for_review(tmp_path, capsys):
    path = tmp_path / "box.stl"
    trimesh.creation.box([179, 179, 199]).export(path)
    out = tmp_path / "print"
    code = main(["prepare", str(path), "--printer", "formlabs_form3b", "--out", str(out), "--json"])
    assert code == HeldForReview.exit_code
    # The print files are written for inspection, plan.json (alone on stdout) with the advice.
    assert sorted(p.name for p in out.iterdir()) == ["plan.json", "print.3mf", "print.stl"]
    captured = capsys.readouterr()
    plan = json.loads((out / "plan.json").read_text())
    assert plan == json.loads(captured.out)
    assert plan["fits"] is False and plan["split"]["scale_to_fit"] == 0.75  # 135 / 179, rounded down
    assert "done, but held for review: box.stl fits formlabs_form3b in no orientation tried" in captured.err
    assert "scale to 0.75 (not applied)" in captured.err
