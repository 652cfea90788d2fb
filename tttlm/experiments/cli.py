"""``tttlm experiment NAME [--scale cpu|paper] [--seeds N] [--arms A,B] [--out DIR] [--dry-run]``, ``tttlm
experiment --list``, ``tttlm experiment --claims DIR`` (the claims table of the committed reports) and ``tttlm
experiment NAME --publish DIR`` (a finished report copied there, the table regenerated).

Exit status: 0 done (or planned); 2 a bad spec, config, data or run directory (the message names it and the fix);
1 a run failed (non-finite loss) or the default corpus could not be fetched; 128 + N stopped by signal N (re-run
the same command to continue).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tttlm.argtypes import positive_int


def _jobs(text: str) -> int | str:
    """``--jobs``: a positive integer or ``auto`` (``plan.default_jobs``)."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or auto; got {text!r}") from None


def _names(text: str) -> list[str]:
    """``--arms``: comma-separated arm names (checked against the spec by ``plan_runs``)."""
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated arm names; got {text!r}")
    return names


def _list() -> int:
    from tttlm.experiments.spec import load_spec, spec_names

    for name in spec_names():
        spec = load_spec(name)
        print(f"{name:20s} {spec.paper}: {spec.title}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from tttlm.data.fetch import FetchError
    from tttlm.experiments.plan import check_data, default_jobs, plan_runs, plan_text
    from tttlm.experiments.run import ExperimentError, run_experiment
    from tttlm.experiments.spec import SpecError, load_spec
    from tttlm.train.loop import NonFiniteError, TrainingInterrupted

    if args.list:
        return _list()
    if args.claims:
        from tttlm.experiments.overview import claims_section

        if not args.claims.is_dir():
            print(f"tttlm experiment: error: --claims {args.claims}: no such directory", file=sys.stderr)
            return 2
        print(claims_section(args.claims))
        return 0
    if not args.name:
        print("tttlm experiment: error: name an experiment (tttlm experiment --list shows them)", file=sys.stderr)
        return 2
    seeds = list(range(args.seeds))
    try:
        spec = load_spec(args.name, args.scale)
        out = args.out or Path("runs/experiments") / f"{spec.name}-{spec.scale}"
        if args.publish:
            from tttlm.experiments.overview import publish_report

            print(f"published: {publish_report(out, args.publish, spec.name)} (and {args.publish}/README.md's claims)")
            return 0
        plans = plan_runs(spec, seeds, out, args.arms)
        jobs = default_jobs(spec) if args.jobs == "auto" else args.jobs
        if args.dry_run:
            print(plan_text(spec, plans, seeds, jobs))
            if spec.scale == "cpu" and spec.trains:
                from tttlm.data.prepare import default_data_dir, is_prepared

                data_dir = args.data or default_data_dir()
                if is_prepared(data_dir):
                    for problem in check_data(spec, plans, data_dir):
                        print(f"data: {problem}")
                else:
                    print(f"data: {data_dir} is not prepared yet (tttlm data prepare); its lengths were not checked")
            print("every config is valid (built without training)")
            return 0
        if spec.scale == "paper":
            import torch

            if not torch.cuda.is_available():
                print(
                    "tttlm experiment: error: the paper scale trains on GPUs and none is visible; use --dry-run to "
                    "validate and plan it here",
                    file=sys.stderr,
                )
                return 2
        report = run_experiment(spec, seeds, out, data_dir=args.data, jobs=jobs, arms=args.arms)
    except TrainingInterrupted as stop:
        print(f"tttlm experiment: {stop}; run the same command again to continue", file=sys.stderr)
        return 128 + stop.signum
    except (NonFiniteError, FetchError) as error:  # a diverged run; the default corpus could not be fetched
        print(f"tttlm experiment: error: {error}", file=sys.stderr)
        return 1
    except (SpecError, ExperimentError, ValueError, OSError) as error:
        print(f"tttlm experiment: error: {error}", file=sys.stderr)
        return 2
    print(f"report: {report}")
    return 0


def add_experiment_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tttlm experiment`` on the top-level sub-command parser."""
    parser = commands.add_parser(
        "experiment",
        help="reproduce one figure or table of the papers: train every arm x seed, evaluate, judge each claim",
        description="Run an experiment spec of configs/experiments/: train every arm for every seed (a re-run "
        "continues unfinished runs and reuses finished ones), evaluate, and write report.md, results.json and "
        "PNGs with every number as a mean and 95% t-interval over seeds and a verdict per claim of the paper. "
        "--dry-run validates every config and prints the runs, tokens, FLOPs and estimated time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("name", nargs="?", help="experiment name (see --list) or a spec YAML file")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--scale", choices=("cpu", "paper"), default="cpu", help="sizes, lengths and budgets")
    parser.add_argument("--seeds", type=positive_int, default=3, help="seeds 0 … N-1 of every arm")
    parser.add_argument(
        "--arms",
        type=_names,
        default=None,
        help="run only these arms (comma-separated names; the report lists the others as not run and their claims "
        "as not resolved); a later run without it reuses their finished runs",
    )
    parser.add_argument(
        "--claims",
        type=Path,
        default=None,
        metavar="DIR",
        help="print the claims of every DIR/<experiment>/results.json as one markdown table (the one in "
        "docs/results/README.md) and exit",
    )
    parser.add_argument(
        "--publish",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy NAME's finished report (report.md, results.json, PNGs; not the runs) to DIR/NAME and regenerate "
        "the claims table of DIR/README.md; trains nothing",
    )
    parser.add_argument("--out", type=Path, default=None, help="runs and report (default runs/experiments/NAME-SCALE)")
    parser.add_argument("--data", type=Path, default=None, help="prepared data directory (default: the cache's)")
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default="auto",
        help="runs trained at a time (processes); auto: as many as the cores this process may use hold runs of the "
        "spec's train_config.threads each (1 where it leaves threads to PyTorch, and at the paper scale)",
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; train nothing")
    parser.set_defaults(func=_experiment)
