"""One colour per arch across the project's plots."""

from __future__ import annotations

from tttlm.models import ARCHS
from tttlm.palette import ARCH_COLOURS, OTHER_COLOURS, colour, line_style, styles_for


def test_every_listed_arch_has_its_own_colour_and_other_names_never_take_one():
    assert len(set(ARCH_COLOURS.values())) == len(ARCH_COLOURS)
    assert not set(OTHER_COLOURS) & set(ARCH_COLOURS.values())
    listed = [arch for arch in ARCHS if arch in ARCH_COLOURS]
    assert len(listed) >= 10  # every arch of the papers' comparisons
    assert colour("ttt-e2e") == ARCH_COLOURS["ttt-e2e"]
    assert colour("not an arch") in OTHER_COLOURS
    assert colour("not an arch") == colour("not an arch")


def test_run_names_take_the_colour_of_the_arch_they_contain_and_repeats_another_dash():
    styles = styles_for(["lc-ttt-e2e", "ttt-linear", "ttt-linear#1", "mamba2", "ladder-1", "ladder-2"])
    assert styles["lc-ttt-e2e"]["color"] == ARCH_COLOURS["ttt-e2e"]
    assert styles["mamba2"]["color"] == ARCH_COLOURS["mamba2"]  # the longest arch name wins over "mamba"
    assert styles["ttt-linear"]["color"] == styles["ttt-linear#1"]["color"]
    assert (styles["ttt-linear"]["linestyle"], styles["ttt-linear#1"]["linestyle"]) == (line_style(0), line_style(1))
    assert styles["ladder-1"]["color"] != styles["ladder-2"]["color"]


def test_lines_swept_over_different_settings_get_one_panel_each(tmp_path, monkeypatch):
    from tttlm.experiments import plots

    panels = []
    draw_panel = plots._draw_panel

    def recording(ax, lines, *, xlabel, logx):
        panels.append((xlabel, [line.label for line in lines]))
        return draw_panel(ax, lines, xlabel=xlabel, logx=logx)

    monkeypatch.setattr(plots, "_draw_panel", recording)
    window = plots.sweep_label("model.overrides.sliding_window", "k")
    batch = plots.sweep_label("model.overrides.mini_batch_size", "b")
    lines = [
        plots.Line("SWA", "swa", [16, 64], [6.5, 6.4], [6.4, 6.3], [6.6, 6.5], panel=window),
        plots.Line("E2E by k", "ttt-e2e", [16, 64], [6.4, 6.4], [6.3, 6.3], [6.5, 6.5], panel=window),
        plots.Line("E2E by b", "ttt-e2e", [4, 32], [6.5, 6.3], [6.4, 6.2], [6.6, 6.4], panel=batch),
    ]
    path = plots._draw(lines, tmp_path / "loss.png", title="t", xlabel="context (tokens)", ylabel="loss", logx=True)
    assert path.stat().st_size > 1000
    assert [label for label, _ in panels] == ["attention window k (tokens)", "inner mini-batch size b (tokens)"]
    assert sorted(panels[0][1]) == ["E2E by k", "SWA"]
    assert panels[1][1] == ["E2E by b"]
