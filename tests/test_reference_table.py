"""models/README.md's goal lines are computed from the rows: each goal flips at its threshold."""

from wae_deploy.training.reference_table import TABLES, render

IMAGENETTE = TABLES[0]


def _row(label, stem, top1, macs):
    return {"label": label, "stem": stem, "top1": top1, "top5": 99.0, "n": 3925, "macs": macs, "speedup": 1.0,
            "size": 128, "minutes": 10.0, "epochs": 30}


def _rows(base, wae, resized, dwt, wae_macs=200e6):
    net = IMAGENETTE.net
    return [_row("Full resolution (baseline)", net, base, 600e6), _row("Resized", f"{net}-resized", resized, 150e6),
            _row("Wavelet", f"{net}-dwt", dwt, 250e6), _row("I_L alone", f"wae-{net}", wae - 1, 180e6),
            _row("WAE (ours: I_L + I_H)", f"wae-{net}", wae, wae_macs),
            {"label": "Decomposition without energy loss", "stem": f"wae-{net}-noenergy", "missing": True}]


def _goals(text):
    return [line for line in text.splitlines() if line.startswith("- ")]


def test_every_goal_met_just_inside_its_threshold():
    text = render(IMAGENETTE, _rows(base=88.0, wae=86.5, resized=84.5, dwt=84.5, wae_macs=200e6))
    assert all(line.endswith("(met)") for line in _goals(text)[:3]), _goals(text)
    assert _goals(text)[3].count("(met)") == 2
    assert "| 30 | 10.0 |" in text and "(not trained yet)" in text


def test_every_goal_missed_just_outside_its_threshold():
    text = render(IMAGENETTE, _rows(base=87.99, wae=86.48, resized=84.49, dwt=84.6, wae_macs=200.1e6))
    goals = _goals(text)
    assert [line.endswith("(missed)") for line in goals[:3]] == [True, True, True], goals
    assert goals[3].count("(missed)") == 2
