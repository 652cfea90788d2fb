"""One colour per architecture, the same in every plot of the project, so a reader learns it once.

``colour(arch)`` gives the colour of a registry arch (``tttlm.models.ARCHS``); a name that is not an arch (a run
label, a ladder step) gets a colour of its own from a second list, the same one every time for the same name.
``line_style(i)`` tells apart several lines of one arch in one plot (the i-th line of that arch in the plot).
"""

from __future__ import annotations

import zlib

# matplotlib's tab10 / tab20 colours (hex) chosen so that the archs that are compared most often (full attention,
# TTT-Linear, TTT-E2E, Mamba, SWA) get the most distinct hues
ARCH_COLOURS: dict[str, str] = {
    "transformer": "#ff7f0e",  # orange: full attention, as in the second paper's figures
    "ttt-linear": "#1f77b4",  # blue
    "ttt-mlp": "#2ca02c",  # green
    "mamba": "#d62728",  # red
    "mamba2": "#e377c2",  # pink
    "swa": "#7f7f7f",  # grey
    "hybrid": "#8c564b",  # brown
    "gated-deltanet": "#bcbd22",  # olive
    "gdn-swa": "#dbdb8d",  # light olive: Gated DeltaNet's hybrid
    "ttt-kvb": "#17becf",  # cyan
    "ttt-kvb-linear": "#9edae5",  # light cyan: paper 1's TTT-Linear beside SWA
    "ttt-e2e": "#9467bd",  # purple
}
# for names that are not archs: the lighter tab20 shades, so they never equal an arch's colour
OTHER_COLOURS = ("#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7")
LINE_STYLES = ("-", "--", ":", "-.")


def colour(name: str) -> str:
    """The colour of arch ``name``; for any other name a stable colour from ``OTHER_COLOURS`` (by a CRC of it)."""
    if name in ARCH_COLOURS:
        return ARCH_COLOURS[name]
    return OTHER_COLOURS[zlib.crc32(name.encode()) % len(OTHER_COLOURS)]


def line_style(index: int) -> str:
    """The dash pattern of the ``index``-th line (0-based) of one arch in one plot."""
    return LINE_STYLES[index % len(LINE_STYLES)]
