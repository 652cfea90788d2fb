"""Every shipped experiment validates and plans at both scales (``--dry-run``), and the command line lists them."""

from __future__ import annotations

import pytest
import torch

from tttlm.cli import main
from tttlm.experiments.plan import plan_runs, plan_text
from tttlm.experiments.spec import SCALES, load_spec, spec_names

# the experiments issue 24 asks for, by the names it suggests
EXPECTED = {
    "ttt-context", "ttt-ladder", "ttt-minibatch", "ttt-latency", "e2e-loss-delta", "e2e-ablations", "e2e-ladder",
    "e2e-naive", "e2e-context", "e2e-train-latency", "e2e-niah",
}  # fmt: skip


def test_every_experiment_of_the_issue_is_shipped():
    assert set(spec_names()) == EXPECTED


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_spec_validates_and_plans(name, scale, tmp_path):
    spec = load_spec(name, scale)
    assert spec.name == name
    plans = plan_runs(spec, [0, 1, 2], tmp_path)
    assert {p.seed for p in plans} == {0, 1, 2}
    assert len(plans) == 3 * sum(len(arm.points) for arm in spec.arms)
    text = plan_text(spec, plans, [0, 1, 2])
    assert f"at scale {scale}" in text
    assert ("GPU-hours" if scale == "paper" else "CPU-minutes") in text
    claim_arms = {ref.arm for claim in spec.claims for ref in (claim.a, claim.b) if ref}
    assert claim_arms <= {arm.name for arm in spec.arms}


def test_the_cpu_scale_has_three_seeds_by_default_and_the_budgets_fit_an_hour(capsys):
    assert main(["experiment", "ttt-minibatch", "--dry-run", "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "seeds [0, 1, 2]" in out
    assert "every config is valid" in out
    minutes = float(out.split("≈ ")[2].split(" min with --jobs 2")[0])
    assert 1 < minutes <= 60


def test_command_line_lists_and_refuses_clearly(capsys):
    assert main(["experiment", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in EXPECTED)
    assert main(["experiment", "nope", "--dry-run"]) == 2
    assert "no experiment 'nope'; choose one of" in capsys.readouterr().err
    assert main(["experiment"]) == 2
    assert "name an experiment" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_the_paper_scale_runs_only_on_gpus(capsys):
    assert main(["experiment", "ttt-minibatch", "--scale", "paper"]) == 2
    assert "the paper scale trains on GPUs and none is visible; use --dry-run" in capsys.readouterr().err


def test_the_results_readme_holds_the_claims_of_the_committed_reports(capsys):
    from pathlib import Path

    from tttlm.experiments.overview import claims_section

    results = Path(__file__).resolve().parents[2] / "docs" / "results"
    section = claims_section(results)
    assert section.count("\n| [") >= 1, "no committed experiment report under docs/results"
    assert section in (results / "README.md").read_text(), (
        "docs/results/README.md's claims table is not the committed reports': regenerate it with "
        "`tttlm experiment --claims docs/results`"
    )
    assert main(["experiment", "--claims", str(results)]) == 0
    assert capsys.readouterr().out.strip() == section
    assert main(["experiment", "--claims", str(results / "nowhere")]) == 2


def test_publish_copies_a_finished_report_and_regenerates_the_claims(tmp_path, capsys):
    import shutil
    from pathlib import Path

    from tttlm.experiments.overview import CLAIMS_BEGIN, CLAIMS_END

    committed = Path(__file__).resolve().parents[2] / "docs" / "results" / "e2e-naive"
    out, root = tmp_path / "out", tmp_path / "results"
    (out / "runs").mkdir(parents=True)
    for name in ("report.md", "results.json"):
        shutil.copy(committed / name, out / name)
    (out / "loss.png").write_bytes(b"png")
    root.mkdir()
    (root / "README.md").write_text(f"# Results\n\n{CLAIMS_BEGIN}\nstale\n{CLAIMS_END}\n\nkept\n")
    (root / "e2e-naive").mkdir()
    (root / "e2e-naive" / "old.png").write_bytes(b"old")
    assert main(["experiment", "e2e-naive", "--out", str(out), "--publish", str(root)]) == 0
    assert sorted(p.name for p in (root / "e2e-naive").iterdir()) == ["loss.png", "report.md", "results.json"]
    readme = (root / "README.md").read_text()
    assert "stale" not in readme
    assert readme.endswith("\n\nkept\n")
    assert "| [e2e-naive](e2e-naive/report.md) |" in readme
    (root / "README.md").write_text("# no markers\n")
    assert main(["experiment", "e2e-naive", "--out", str(out), "--publish", str(root)]) == 2
    assert "has no claims section" in capsys.readouterr().err
    assert main(["experiment", "e2e-naive", "--out", str(tmp_path / "nothing"), "--publish", str(root)]) == 2
    assert "holds no finished report" in capsys.readouterr().err
