"""The model registry: names, sizes, parameter matching at every preset, overrides and their errors, the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import PreTrainedModel

from tttlm.cli import main
from tttlm.models import ARCHS, SIZES, TTTConfig, TTTForCausalLM, arch_of, build, make_config, param_count
from tttlm.models.cli import table_rows
from tttlm.models.registry import reference_config

EXPECTED_ARCHS = [
    "ttt-linear",
    "ttt-mlp",
    "transformer",
    "full-attention",
    "swa",
    "hybrid",
    "mamba",
    "mamba2",
    "gated-deltanet",
    "gdn-swa",
    "mamba2-swa",
    "ttt-kvb",
    "ttt-kvb-linear",
    "ttt-e2e",
]


def test_the_registry_has_every_arch_of_the_issue() -> None:
    assert list(ARCHS) == EXPECTED_ARCHS
    assert SIZES == ("tiny", "125m", "350m", "760m", "1.3b", "1b", "3b")  # paper 1 and paper 2 sizes


@pytest.mark.parametrize("size", SIZES)
def test_every_arch_matches_the_ttt_linear_parameter_count_within_5_percent(size: str) -> None:
    reference = TTTForCausalLM(TTTConfig.from_preset(size)) if size == "tiny" else None
    # every arch, the TTT archs with both backbones; built on the meta device
    rows = table_rows(size, match_params="ttt-linear")
    assert len(rows) == len(ARCHS) + 2
    for row in rows:
        if row["arch"] == "ttt-e2e":  # the release's own widths (E2E_PRESETS), never solved; within 15% here
            assert abs(row["ratio"] - 1) <= 0.15, f"{size} ttt-e2e: {row['params']:,} ({row['ratio']:.3f})"
            continue
        assert abs(row["ratio"] - 1) <= 0.05, f"{size} {row['arch']}: {row['params']:,} ({row['ratio']:.3f})"
    assert rows[0]["arch"] == "ttt-linear (transformer)"
    assert rows[0]["ratio"] == 1.0
    if reference is not None:  # the counting itself, checked once against a real model
        assert rows[0]["params"] == sum(p.numel() for p in reference.parameters())


def test_meta_build_is_shapes_only() -> None:
    with torch.device("meta"):
        model = build("gated-deltanet", "1.3b")
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == param_count("gated-deltanet", "1.3b")


def test_reference_is_the_preset_and_is_not_resized() -> None:
    config = make_config("ttt-linear", "125m")
    assert config.to_diff_dict() | {"tttlm_arch": "ttt-linear"} == TTTConfig.from_preset("125m").to_diff_dict() | {
        "tttlm_arch": "ttt-linear"
    }
    assert reference_config("125m").intermediate_size == 2048


def test_the_papers_widths_by_default_and_matched_widths_by_name() -> None:
    # paper 1's Transformer: the Mamba paper's Llama recipe, MLP 2048 at 125m; Mamba: expand 2, 2 layers per block
    assert make_config("transformer", "125m").intermediate_size == 2048
    assert make_config("gated-deltanet", "125m").intermediate_size == 2048
    assert make_config("mamba", "125m").intermediate_size == 2 * 768
    assert make_config("mamba2", "125m").num_hidden_layers == 24
    assert make_config("gated-deltanet", "125m", match_params=False).intermediate_size == 2048  # False: the same
    solved = make_config("gated-deltanet", "125m", match_params="ttt-linear")
    assert solved.intermediate_size != 2048  # GDN's gates, convs and 2 x wider values cost more than q/k/v/o
    assert solved.intermediate_size % 8 == 0
    # unmatched, Gated DeltaNet is 8 % larger than TTT-Linear: the 5 % test above would fail
    assert param_count("gated-deltanet", "125m") / param_count("ttt-linear", "125m") > 1.05
    assert make_config("transformer", "125m", match_params="ttt-linear").intermediate_size == 2072
    kept = make_config("transformer", "125m", match_params="ttt-linear", intermediate_size=1000)
    assert kept.intermediate_size == 1000
    for bad in (True, "transformer", 1):
        with pytest.raises(ValueError, match=r"match_params must be None .* 'ttt-linear'"):
            make_config("swa", "tiny", match_params=bad)


def test_shared_dims_change_the_reference_too() -> None:
    bigger = make_config("swa", "tiny", match_params="ttt-linear", hidden_size=128, num_attention_heads=2)
    assert (bigger.hidden_size, bigger.num_attention_heads) == (128, 2)
    ratio = param_count("swa", "tiny", match_params="ttt-linear", hidden_size=128, num_attention_heads=2) / param_count(
        "ttt-linear", "tiny", hidden_size=128, num_attention_heads=2
    )
    assert abs(ratio - 1) < 0.05


def test_size_defaults_of_the_baseline_knobs() -> None:
    tiny_kvb = make_config("ttt-kvb-linear", "tiny")
    assert (tiny_kvb.sliding_window, tiny_kvb.ttt_mini_batch_size, tiny_kvb.ttt_layer_type) == (64, 64, "linear")
    assert tiny_kvb.layer_mixers == [["sliding_attention", "ttt"]] * 2
    # LaCT's LM config (lact_llm/configs/760M_*.json): chunk = window = 2048, 4 heads, rank 32, θ 1e6
    lact = make_config("ttt-kvb", "125m")
    assert lact.layer_mixers == [["lact"]] * 12
    assert (lact.sliding_window, lact.lact_chunk_size, lact.lact_num_heads, lact.lact_low_rank) == (2048, 2048, 4, 32)
    assert (lact.rope_theta, lact.lact_use_momentum, lact.lact_use_muon) == (1e6, True, False)
    assert (make_config("ttt-kvb", "tiny").lact_chunk_size, make_config("ttt-kvb", "tiny").sliding_window) == (64, 64)
    big = make_config("hybrid", "125m")
    assert big.sliding_window == 2048
    # "five SWA layers followed by one full attention layer" (TTT-E2E paper §3.1); tiny: 6 layers
    assert [m[0] for m in big.layer_mixers] == (["sliding_attention"] * 5 + ["full_attention"]) * 2
    tiny_hybrid = make_config("hybrid", "tiny")
    assert [m[0] for m in tiny_hybrid.layer_mixers] == ["sliding_attention"] * 5 + ["full_attention"]
    # Gated DeltaNet: fla's head dim 256 and key width ~0.75 x hidden, expand_v 2; gdn-swa alternates with SWA
    gdn = make_config("gated-deltanet", "1.3b")
    assert (gdn.gdn_head_dim, gdn.gdn_num_heads, gdn.gdn_expand_v) == (256, 6, 2)
    h1 = make_config("gdn-swa", "125m")
    assert [m[0] for m in h1.layer_mixers] == ["gated_deltanet", "sliding_attention"] * 6
    assert (h1.gdn_head_dim, h1.sliding_window) == (256, 2048)
    assert make_config("swa", "tiny", sliding_window=16).sliding_window == 16
    assert make_config("mamba2", "125m").head_dim == 64
    assert make_config("ttt-linear", "tiny", backbone="mamba").backbone == "mamba"


def test_full_attention_has_the_release_block_and_paper_2s_extension_theta() -> None:
    config = make_config("full-attention", "125m")
    assert config.layer_mixers == [["full_attention"]] * 12
    assert (config.qk_norm, config.post_norm, config.rope_pairing) == (True, True, "interleaved")
    assert config.rope_theta == 5e5
    # paper 2, Appendix: 1M/2M/5M/10M at 16K/32K/64K/128K after 8K (the release: 2M at 32K, 10M at 128K)
    thetas = [make_config("full-attention", "tiny", rope_extension=f).rope_theta for f in (1, 2, 4, 8, 16)]
    assert thetas == [5e5, 1e6, 2e6, 5e6, 1e7]
    # paper 1's Llama recipe stays as it is
    assert make_config("transformer", "125m").rope_parameters["rope_theta"] == 10000.0
    with pytest.raises(ValueError, match=r"rope_extension must be .* 1, 2, 4, 8, 16.*got 3"):
        make_config("full-attention", "tiny", rope_extension=3)
    with pytest.raises(ValueError, match="not both"):
        make_config("full-attention", "tiny", rope_extension=2, rope_theta=1e6)


@pytest.mark.parametrize("arch", EXPECTED_ARCHS)
def test_build_records_the_arch(arch: str) -> None:
    model = build(arch)
    assert isinstance(model, PreTrainedModel)
    assert arch_of(model) == arch
    assert arch_of(model.config) == arch


@pytest.mark.parametrize(
    ("call", "needles"),
    [
        (lambda: build("gpt"), ["'gpt'", "ttt-linear", "gated-deltanet"]),
        (lambda: build("swa", "7b"), ["'7b'", "tiny", "1.3b"]),
        (lambda: build("swa", windo=3), ["swa", "'windo'", "sliding_window"]),
        (lambda: build("mamba", num_attention_heads=4), ["mamba", "'num_attention_heads'", "state_size"]),
        (lambda: build("transformer", full_attention_every=2), ["'full_attention_every'"]),
        (lambda: build("swa", sliding_window=0), ["sliding_window", "0"]),
        (lambda: build("hybrid", full_attention_every=-1), ["full_attention_every", "-1"]),
        (lambda: build("ttt-linear", backbone="rwkv"), ["backbone", "'rwkv'"]),
        (lambda: build("gated-deltanet", gdn_form="fast"), ["gdn_form", "'fast'"]),
        (lambda: build("swa", layer_mixers=[["conv"], ["swa"]]), ["layer_mixers[0]", "'conv'"]),
    ],
    ids=[
        "arch",
        "size",
        "typo",
        "not-a-field",
        "knob-of-another-arch",
        "bad-window",
        "bad-every",
        "bad-backbone",
        "bad-form",
        "bad-mixer",
    ],
)
def test_bad_names_and_values_raise_clear_errors(call: object, needles: list[str]) -> None:
    with pytest.raises(ValueError, match=re.escape(needles[0])) as info:
        call()
    assert all(needle in str(info.value) for needle in needles), str(info.value)


def test_unmatchable_width_is_reported() -> None:
    # width 512 with the tiny preset's MLP of 172: the SWA sub-block TTT-KVB adds (4 × 512² per block) costs more
    # than its whole MLP, so no MLP width matches
    with pytest.raises(ValueError, match=r"cannot match .* without match_params"):
        make_config("ttt-kvb-linear", "tiny", match_params="ttt-linear", hidden_size=512, num_attention_heads=8)
    assert make_config("ttt-kvb-linear", "tiny", hidden_size=512, num_attention_heads=8)


def test_cli_models_prints_every_arch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--size", "tiny"]) == 0
    out = capsys.readouterr().out
    for arch in EXPECTED_ARCHS:
        assert arch in out
    assert "ttt-linear (mamba)" in out
    assert "1.000" in out


def test_cli_models_json_has_a_sourced_record_per_arch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--size", "125m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    records = {r["arch"]: r for r in out["archs"]}
    assert set(EXPECTED_ARCHS) - {"ttt-linear", "ttt-mlp"} <= set(records)
    for record in out["archs"]:
        for key in ("arch", "size", "layer_pattern", "widths", "heads", "head_dims", "window", "params", "sources"):
            assert key in record, (record["arch"], key)
        assert record["sources"], record["arch"]
        assert set(record["layer_pattern"]) - set("()") <= set(out["letters"]), record["arch"]
    assert records["hybrid"]["layer_pattern"] == "SSSSSFSSSSSF"
    assert records["ttt-kvb"]["layer_pattern"] == "L" * 12
    assert records["mamba2-swa"]["layer_pattern"] == "MS" * 6
    assert records["full-attention"]["layer_pattern"] == "F" * 12
    assert records["ttt-e2e"]["layer_pattern"] == "S" * 9 + "E" * 3  # no conv: short_conv is off by default
    assert records["mamba2-swa"]["head_dims"] == {"attention": 64, "ssd": 64}
    assert records["ttt-kvb"]["window"] == records["ttt-kvb"]["widths"]["lact_chunk"] == 2048
    assert records["gated-deltanet"]["head_dims"] == {"gdn_key": 256, "gdn_value": 512}
    assert records["ttt-linear (mamba)"]["layer_pattern"] == "(CT)" * 12


def test_cli_models_help_and_bad_size(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "--help"])
    assert info.value.code == 0
    assert "--size" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["models", "--size", "7b"])
    assert info.value.code == 2
    assert "choose one of" in capsys.readouterr().err


@pytest.mark.parametrize("arch", EXPECTED_ARCHS)
def test_every_arch_is_causal(arch: str) -> None:
    """Changing token p changes no logit before p — also for the archs that learn at test time (the inner step of
    TTT-E2E uses a mini-batch's next-token labels, i.e. the first token of the next mini-batch)."""
    torch.manual_seed(0)
    model = build(arch, "tiny").double().eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        for p in (7, 8, 16, 33):  # inside and at the edges of mini-batches (b = 8 for ttt-e2e, 16 for ttt-linear)
            changed = ids.clone()
            changed[0, p] = (changed[0, p] + 1) % model.config.vocab_size
            other = model(input_ids=changed).logits
            assert torch.equal(other[:, :p], logits[:, :p]), f"{arch}: token {p} changed earlier logits"
            assert not torch.equal(other[:, p], logits[:, p])
