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
