"""One colour per architecture, the same in every plot of the project, so a reader learns it once.

``colour(arch)`` gives the colour of a registry arch (``tttlm.models.ARCHS``); a name that is not an arch (a run
label, a ladder step) gets a colour of its own from a second list, the same one every time for the same name.
``line_style(i)`` tells apart several lines of one arch in one plot (the i-th line of that arch in the plot).
``styles_for(names)`` styles the lines of one plot by run names: a name that contains an arch's name (``lc-ttt-e2e``,
``demo-transformer``) gets that arch's colour (a second line of that arch another dash pattern), the others distinct
colours of the second list.
"""

from __future__ import annotations

import zlib

# matplotlib's tab10 / tab20 colours (hex) chosen so that the archs that are compared most often (full attention,
# TTT-Linear, TTT-E2E, Mamba, SWA) get the most distinct hues
ARCH_COLOURS: dict[str, str] = {
    "transformer": "#ff7f0e",  # orange: full attention, as in the second paper's figures
    "full-attention": "#e6550d",  # dark orange: full attention with the TTT-E2E release's block
    "ttt-linear": "#1f77b4",  # blue
    "ttt-mlp": "#2ca02c",  # green
    "mamba": "#d62728",  # red
    "mamba2": "#e377c2",  # pink
    "mamba2-swa": "#f1a7d0",  # light pink: Mamba 2's hybrid with SWA
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


def arch_in(name: str) -> str | None:
    """The longest arch name (of ``ARCH_COLOURS``) that ``name`` contains, or None."""
    found = [arch for arch in ARCH_COLOURS if arch in name]
    return max(found, key=len) if found else None


def styles_for(names: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Matplotlib ``color`` and ``linestyle`` per name for one plot: the colour of the arch a name contains (else the
    next unused colour of ``OTHER_COLOURS``), and ``line_style(i)`` for the i-th name of the same arch, so that two
    lines of one arch (two forms, two seeds) stay apart."""
    out, others, seen = {}, 0, {}
    for name in names:
        arch = arch_in(name)
        if arch is None:
            out[name] = {"color": OTHER_COLOURS[others % len(OTHER_COLOURS)], "linestyle": line_style(0)}
            others += 1
        else:
            out[name] = {"color": ARCH_COLOURS[arch], "linestyle": line_style(seen.get(arch, 0))}
            seen[arch] = seen.get(arch, 0) + 1
    return out
