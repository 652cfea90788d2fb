"""An analytic estimate of the memory of one TTT-E2E meta-training step (forward + backward + AdamW), by term.

Notation: B sequences of T tokens, hidden d, MLP widths m (static) and m' (prime), V vocabulary, H query heads,
d_kv = key/value width, window k, mini-batch b, n = ⌈T / b⌉ mini-batches, L blocks of which the top U are updated,
N parameters (N_t trainable). Counts are in numbers ("floats"); activations take ``activation_bytes`` each (4 in
float32; 2 for what bf16 autocast stores), gradients, fast weights and AdamW states 4.

* weights 4N, gradients 4N_t, AdamW 8N_t (two moments);
* the outer loss is scored inside each inner step from that step's own log-probabilities (counted in ``HEAD``), so
  no log-probabilities or gradients over the whole sequence exist; the call still returns the logits of every
  position, B·T·V (as a trainer calls it, without ``logits_to_keep``), twice at the end of the forward (the
  mini-batches' pieces and their concatenation), alive until the caller drops them, i.e. during the forward only
  for a trainer that reads ``.loss`` (as ``tttlm train`` and transformers' Trainer);
* a block below the updated ones saves ``LOWER_BLOCK`` = 19 d + 4 m per token for the backward; rematerialised
  (``remat="all"``) only its input, d per token, and the backward recomputes one block at a time;
* an inner step (one mini-batch through the U updated blocks and the head, with its inner backward built for the
  second-order outer backward) saves per token and updated block ``UPDATED_BLOCK`` = 24.5 d + 4 m + 8.25 m'
  plus the attention probabilities of the math kernel (the only one with a double backward), 0.77 H (k + b);
  per token once the head's ``HEAD`` = 2.8 V (logits, softmax and their inner-backward terms); and per updated
  block ``FAST_WEIGHT_COPIES`` = 8 d·m' (W_i, its gradient, W_{i+1} and the double backward's products);
  without remat all n steps stay saved, with remat the backward recomputes one step at a time;
* every step, rematerialised or not, hands the next its carry: per updated block the KV window, 2 (k − 1) d_kv,
  and the fast weights, 3 d·m' (float32), plus the mini-batch's input b·d.

The coefficients were counted from the tensors autograd saves in this implementation (``saved_tensors_hooks``,
float32, CPU kernels, per token of each term as d, m, m', V, H, k and b were varied one at a time); the backward's
working set (a gradient of each recomputed piece alive while it is used) is taken as one more copy of what it
recomputes. ``tests/bench/test_memory.py`` holds the estimate to within ``TOLERANCE`` of the measured peak
(``bench/live_memory.py``) at small sizes it was not counted at. On a GPU the fused attention kernels of the
lower blocks save less than the CPU's, so the estimate is an upper bound there; for grouped-query attention only
the KV carry uses d_kv (the saved q/k/v terms are counted at width d, again an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from tttlm.models.e2e.configuration import E2EConfig, resolve_remat
from tttlm.models.e2e.modeling import E2EForCausalLM

LOWER_BLOCK = (19.0, 4.0)  # floats per token of a lower block: × d, × m
UPDATED_BLOCK = (24.5, 4.0, 8.25)  # floats per token of an updated block in an inner step: × d, × m, × m'
ATTENTION_PROBS = 0.77  # × H (k + b) per token of an updated block (the math kernel's probabilities)
HEAD = 2.8  # × V per token of an inner step
FAST_WEIGHT_COPIES = 8.0  # × d m' per updated block and inner step
TOLERANCE = 0.25  # the estimate of the step peak is within ±25 % of the measured at small sizes (0.85-1.22)
TRAINABLES = ("all", "updated")  # every parameter, or only the updated blocks' (train.trainable on their indices)


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step by term; ``step_peak`` (gradients + activations) is what ``bench/memory.py``
    measures, ``total`` adds the weights and AdamW's states."""

    parameters: int
    trainable: int
    weights: float
    gradients: float
    optimizer: float
    activations: float
    activation_bytes: int

    @property
    def step_peak(self) -> float:
        return self.gradients + self.activations

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.activations

    def to_json(self) -> dict[str, float]:
        return {**asdict(self), "step_peak": self.step_peak, "total": self.total}


def parameter_counts(config: E2EConfig) -> tuple[int, int]:
    """(all parameters, those of the updated blocks), counted on a model built on the meta device."""
    with torch.device("meta"):
        model = E2EForCausalLM(config)
    updated = sum(p.numel() for block in model.model.updated_blocks for p in block.parameters())
    return sum(p.numel() for p in model.parameters()), updated


def estimate_step_memory(
    config: E2EConfig,
    batch: int,
    seq: int,
    trainable: str = "all",
    activation_bytes: int = 4,
    device_type: str = "cuda",
) -> MemoryEstimate:
    """The estimate of one meta-training step of ``config`` (in its ``remat`` mode) on (batch, seq) tokens (see
    the module docstring).

    Args:
        config: the model.
        batch, seq: sequences per step and tokens per sequence.
        trainable: "all", or "updated": only the updated blocks train (nothing below them is saved).
        activation_bytes: bytes per saved activation (4: float32; 2: bf16 autocast).
        device_type: where it runs (resolves ``remat="auto"``).
    """
    remat = resolve_remat(config.remat, device_type)
    if trainable not in TRAINABLES:
        raise ValueError(f"trainable must be one of {', '.join(TRAINABLES)}; got {trainable!r}")
    if min(batch, seq) < 1:
        raise ValueError(f"batch and seq must be positive; got {batch} and {seq}")
    n_all, n_updated = parameter_counts(config)
    n_trainable = n_all if trainable == "all" else n_updated
    d, m, mp, vocab = (config.hidden_size, config.intermediate_size, config.prime_intermediate_size, config.vocab_size)
    heads, k, b = config.num_attention_heads, config.sliding_window, config.mini_batch_size
    head_dim = config.head_dim or d // heads
    d_kv = (config.num_key_value_heads or heads) * head_dim
    updated, lower = config.num_updated_layers, config.first_updated_layer
    tokens, steps = batch * seq, math.ceil(seq / b)

    lower_block = tokens * (LOWER_BLOCK[0] * d + LOWER_BLOCK[1] * m)
    if trainable == "updated":
        lower_saved = lower_work = 0.0  # no gradient reaches below the updated blocks: nothing is recorded
    elif remat == "all":
        lower_saved, lower_work = lower * tokens * d, 2 * lower_block  # one block recomputed, and its gradients
    else:
        lower_saved, lower_work = lower * lower_block, lower_block  # the gradients of one block's activations
    per_token = updated * (
        UPDATED_BLOCK[0] * d + UPDATED_BLOCK[1] * m + UPDATED_BLOCK[2] * mp + ATTENTION_PROBS * heads * (k + b)
    )
    step = batch * b * (per_token + HEAD * vocab)
    step_fp32 = batch * updated * FAST_WEIGHT_COPIES * d * mp
    carry = batch * updated * 2 * (k - 1) * d_kv + batch * b * d
    carry_fp32 = batch * updated * 3 * d * mp
    if remat == "none":  # every step's activations
        saved = activation_bytes * steps * step + 4.0 * steps * step_fp32
        work = 0.0
    else:  # every step's carry, and in the backward one step recomputed with its backward
        saved = activation_bytes * steps * carry + 4.0 * steps * carry_fp32
        work = activation_bytes * 2 * step + 4.0 * 2 * step_fp32
    # the forward's output, freed before the backward; twice while the mini-batches' logits are concatenated
    returned_logits = 2 * activation_bytes * tokens * vocab
    # the peak: at the end of the forward, while the updated blocks are differentiated, or later the lower blocks
    activations = activation_bytes * lower_saved + max(
        saved + returned_logits, saved + work, activation_bytes * lower_work
    )
    return MemoryEstimate(
        parameters=n_all,
        trainable=n_trainable,
        weights=4.0 * n_all,
        gradients=4.0 * n_trainable,
        optimizer=8.0 * n_trainable,
        activations=activations,
        activation_bytes=activation_bytes,
    )
