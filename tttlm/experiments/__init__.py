"""Every figure and table of the two papers as one command: ``tttlm experiment NAME``.

spec.py          the YAML specs (``configs/experiments/``): arms, training config, evaluations, claims
requirements.py  features an arm may need that do not exist yet (the arm is refused with what is missing)
plan.py          spec -> one validated training config per arm × point × seed, with tokens, FLOPs and time
run.py           train (resumable, reusing finished runs), evaluate, cache, report
evaluations.py   the evaluations (perplexity, loss by token index, forward/training time, S-NIAH)
stats.py         mean and 95% t-interval over seeds
verdicts.py      reproduced / contradicted / not resolved at this scale
results.py       per-run metrics -> intervals and judged claims
plots.py         the figures (bands, one colour per arch)
report.py        report.md, results.json, PNGs
"""

from tttlm.experiments.plan import plan_runs, plan_text
from tttlm.experiments.run import ExperimentError, run_experiment
from tttlm.experiments.spec import SpecError, load_spec, spec_names
from tttlm.experiments.stats import Interval, t_interval
from tttlm.experiments.verdicts import verdict

__all__ = [
    "ExperimentError",
    "Interval",
    "SpecError",
    "load_spec",
    "plan_runs",
    "plan_text",
    "run_experiment",
    "spec_names",
    "t_interval",
    "verdict",
]
