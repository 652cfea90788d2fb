"""Generating from a model: the prompt prefilled in chunks (``tttlm.models.streaming.prefill``), then one token per
call with the cache, each picked by a sampler (greedy, or temperature / top-k / top-p).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from tttlm.eval.loading import model_device
from tttlm.models.hf_compat import cache_argument, output_cache
from tttlm.models.streaming import prefill

Sampler = Callable[[Tensor], int]


def greedy(logits: Tensor) -> int:
    """The most likely token of (vocab,) logits."""
    return int(torch.argmax(logits))


def make_sampler(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Sampler:
    """Temperature / top-k / top-p (nucleus) sampling from (vocab,) logits; temperature 0 is greedy."""
    if temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0, top_k >= 0, 0 < top_p <= 1; got {temperature}, {top_k}, {top_p}")
    if temperature == 0:
        return greedy
    generator = torch.Generator().manual_seed(seed if seed is not None else torch.seed())

    def sample(logits: Tensor) -> int:
        logits = logits.float().cpu() / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1:
            order = torch.argsort(logits, descending=True)
            probs = torch.softmax(logits[order], dim=-1)
            # keep the smallest prefix whose mass reaches top_p (the first token always stays)
            drop = torch.cumsum(probs, dim=-1) - probs >= top_p
            logits[order[drop]] = float("-inf")
        return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))

    return sample


@torch.no_grad()
def generate_tokens(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    *,
    chunk_size: int = 2048,
    sampler: Sampler = greedy,
    stop_ids: Sequence[int] = (),
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """Prefill ``prompt_ids`` in chunks (registry ``prefill``), then decode one token per call with the cache.

    Returns the new token ids (a stop id ends generation and is not returned); ``on_token`` sees each as it comes.
    """
    if not prompt_ids:
        raise ValueError("the prompt is empty; give at least one token")
    ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=model_device(model))
    state = prefill(model, ids, chunk_size, token_loss=False)
    cache, logits, new = state.past_key_values, state.last_logits[0], []
    for _ in range(max_new_tokens):
        token = sampler(logits)
        if token in stop_ids:
            break
        new.append(token)
        if on_token is not None:
            on_token(token)
        if len(new) == max_new_tokens:
            break  # no forward call for a token that nobody reads
        out = model(torch.tensor([[token]], device=ids.device), **cache_argument(cache), use_cache=True)
        cache, logits = output_cache(out), out.logits[0, -1]
    return new
