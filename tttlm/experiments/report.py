"""``report.md``, ``results.json`` and the PNGs of an experiment, from its ``results.Summary``.

The report leads with the claims table (claim | paper's figure | the paper's number | our result ± 95% interval
| verdict), then every measured metric of every arm as mean ± half-width of the 95% t-interval over seeds, the
figures, the arms not run with what they need, and the setting (command, seeds, machine, load).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from tttlm.experiments.plots import curve_figure, metric_figure
from tttlm.experiments.results import Summary, expectation_text, quantity_text
from tttlm.experiments.spec import split_metric


def _metric_bases(summary: Summary) -> list[str]:
    bases: dict[str, None] = {}
    for points in summary.intervals.values():
        for metrics in points.values():
            for name in metrics:
                bases.setdefault(split_metric(name)[0], None)
    return list(bases)


def _claims_table(summary: Summary) -> list[str]:
    rows = [
        "| claim | paper's figure | paper | quantity (ours) | ours: mean [95% interval] | seeds | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in summary.claims:
        claim = result.claim
        expect = expectation_text(claim)
        if result.interval is None:
            ours = f"— ({result.reason})"
        elif result.interval.n == 1:
            ours = f"{result.interval.mean:.4g} (one seed)"
        else:
            ours = f"{result.interval.mean:.4g} [{result.interval.low:.4g}, {result.interval.high:.4g}]"
        rows.append(
            f"| {claim.text} | {claim.source} | {claim.paper or '—'} | {quantity_text(claim, summary.spec)} "
            f"(claimed {expect}) | {ours} | {len(result.per_seed)} | **{result.verdict}** |"
        )
    notes = [f"- **{r.claim.id}**: {r.claim.note}" for r in summary.claims if r.claim.note]
    return rows + (["", *notes] if notes else [])


def _values_table(summary: Summary) -> list[str]:
    bases = _metric_bases(summary)
    lines = []
    for base in bases:
        rows = []
        for arm in summary.spec.arms:
            for label, metrics in summary.intervals.get(arm.name, {}).items():
                cells = [(split_metric(k)[1], v) for k, v in metrics.items() if split_metric(k)[0] == base]
                for point, interval in cells:
                    where = ", ".join(x for x in (label, f"@{point}" if point else "") if x)
                    rows.append(f"| {arm.label} | {where or '—'} | {interval.text()} | {interval.n} |")
        lines += [f"### {base}", "", "| arm | point | mean ± 95% half-width | seeds |", "| --- | --- | --- | --- |"]
        lines += [*rows, ""]
    return lines


def _setting(summary: Summary) -> list[str]:
    from tttlm.bench.timing import machine_info

    machine = machine_info()
    load = os.getloadavg()
    command = "tttlm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "(library call)"
    spec = summary.spec
    return [
        f"- command: `{command}`",
        f"- spec: `{spec.path.name}` at scale `{spec.scale}`; seeds {summary.seeds}",
        f"- machine: {machine.get('processor', '?')}, torch {machine.get('torch', '?')}; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when the report was written (a shared machine: timings at "
        "one thread on the CPU are the calling thread's CPU time unless a spec sets clock: wall)",
        "- intervals: 95% Student-t over seeds (mean ± t(0.975, n − 1) · s / √n); a claim's quantity is computed per "
        "seed (paired by seed) before it is summarised",
    ]


def write_report(spec: Any, summary: Summary, out: Path) -> Path:
    """Write ``report.md``, ``results.json`` and the figures to ``out``; return the report's path."""
    from tttlm.data.io import write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for base in _metric_bases(summary):
        figure = metric_figure(summary, base, out / f"{base}.png")
        if figure:
            figures.append(figure)
    for evaluation in spec.evaluations:
        if evaluation.kind == "by_position":
            figure = curve_figure(summary, "by_position", out / "by_position.png", evaluation.settings["reference"])
            if figure:
                figures.append(figure)
    not_run = [f"- **{arm}**: {'; '.join(reasons)}" for arm, reasons in summary.not_run.items()]
    text = [
        f"# {spec.title}",
        "",
        f"{spec.paper}. {spec.summary.strip()}",
        "",
        "## Claims",
        "",
        *_claims_table(summary),
        "",
        "## Measured",
        "",
        *_values_table(summary),
        "## Figures",
        "",
        *[f"![{f.stem}]({f.name})" for f in figures],
        "",
    ]
    if not_run:
        text += ["## Not run", "", *not_run, ""]
    text += ["## Setting", "", *_setting(summary), ""]
    report = out / "report.md"
    report.write_text("\n".join(text))
    write_json_atomic(
        out / "results.json",
        {
            "experiment": spec.name,
            "scale": spec.scale,
            "seeds": summary.seeds,
            "claims": [c.to_json(summary.spec) for c in summary.claims],
            "values": summary.values,
            "intervals": {
                arm: {p: {m: i.to_json() for m, i in ms.items()} for p, ms in points.items()}
                for arm, points in summary.intervals.items()
            },
            "not_run": summary.not_run,
        },
    )
    return report
