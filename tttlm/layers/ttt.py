"""TTT-Linear and TTT-MLP sequence-mixing layers: projections, learnable inner lr and initial state, RoPE
modulo the mini-batch, output LayerNorm and gate around the functional ops of ``tttlm.ops``.

Per head (d = head dim), from the normalised block input x:
    q, k, v = x θQ, x θK, x θV  (Mamba backbone: one shared projection, then two causal convs give q and k)
    q, k    ← RoPE with position (t mod b)
    lr_t    = s · base_lr · sigmoid(x_t θ_lr + b_lr) / d    (s: inner_lr_scale, the trainer's warm-up factor)
    z       = TTT op (inner model learnt on (k, v), read at q; initial weights W0 and inner LN learnable)
    y       = θO (gelu_tanh(x θG) ⊙ LN(z))        (the gate is optional)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from tttlm.layers.conv import CausalConv
from tttlm.layers.rope import apply_rope, rope_angles
from tttlm.ops.forms import INNER_MODELS, SEQUENCE_FORMS, canonical_form, run_form
from tttlm.ops.inner_norm import gelu_tanh
from tttlm.ops.state import TTTState
from tttlm.ops.ttt_linear import FORMS as LINEAR_FORMS
from tttlm.ops.ttt_mlp import FORMS as MLP_FORMS

# the paper's inner learning rates: TTT-Linear 1.0, TTT-MLP 0.1
DEFAULT_BASE_LR = {"linear": 1.0, "mlp": 0.1}
# the start of the inner-lr warm-up as a fraction of the base rate (ttt-lm-jax README and scripts/ttt_mlp/*.sh:
# ttt_base_lr_init=0.01 for ttt_base_lr=0.1; TTT-Linear has none)
WARMUP_RATIO = {"linear": None, "mlp": 0.1}


class TTTLayerCache(NamedTuple):
    """What one TTT layer carries between calls: the inner state and, with shared q/k, the conv states."""

    state: TTTState
    conv_q: Tensor | None = None
    conv_k: Tensor | None = None


class TTTLayer(nn.Module):
    """A TTT sequence-mixing layer. Input and output (batch, seq, hidden_size).

    Args:
        hidden_size: model width; must be divisible by ``num_heads``.
        num_heads: number of TTT heads; head dim = hidden_size / num_heads (even, for RoPE).
        inner: "linear" (TTT-Linear) or "mlp" (TTT-MLP, hidden ``mlp_ratio`` × head dim).
        mini_batch_size: TTT mini-batch size b.
        base_lr: η_base; None takes the paper's value (1.0 linear, 0.1 MLP).
        rope_theta: RoPE base.
        use_gate: multiply the output by gelu_tanh(x θG).
        share_qk: the Mamba-backbone variant: one projection for q and k followed by two causal depthwise
            convs (kernel ``conv_kernel``) that give q and k.
        form: op form for training and prefill (one of ``tttlm.ops.SEQUENCE_FORMS``: "dual", "primal", "triton",
            "auto"); single-token decoding uses "step" with "dual", the fused step kernel with "triton".
        eps: epsilon of the inner and output LayerNorms.
        initializer_range: std of the normal init of projections, W0 and θ_lr.
        inner_norm: LayerNorm + residual in the inner model, ``f(x) = x + LN(g(x))``; False gives the plain
            learner ``f = g`` (the paper's ablation ladder starts there: with b = seq length, W0 = 0 and a fixed
            lr, TTT-Linear is linear attention).
        learn_init: learn the initial inner weights W0. False keeps them fixed (buffers, not trained): zeros for
            TTT-Linear (the paper's ablation), the random init for TTT-MLP (zeros would stop its gradients).
        learn_lr: learn the token-dependent inner lr ``base_lr · sigmoid(x θ_lr + b_lr) / d``; False fixes it at
            that expression's initial value ``base_lr · sigmoid(0) / d`` for every token.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        inner: str = "linear",
        *,
        mini_batch_size: int = 16,
        base_lr: float | None = None,
        rope_theta: float = 10000.0,
        use_gate: bool = True,
        share_qk: bool = False,
        conv_kernel: int = 4,
        mlp_ratio: int = 4,
        form: str = "dual",
        eps: float = 1e-6,
        initializer_range: float = 0.02,
        inner_norm: bool = True,
        learn_init: bool = True,
        learn_lr: bool = True,
    ) -> None:
        super().__init__()
        if inner not in INNER_MODELS:
            raise ValueError(f"inner must be one of {INNER_MODELS}; got {inner!r}")
        if num_heads < 1 or hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be a positive multiple of num_heads ({num_heads})")
        if (hidden_size // num_heads) % 2:
            raise ValueError(f"head dim hidden_size / num_heads = {hidden_size // num_heads} must be even (RoPE)")
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ValueError(f"mini_batch_size must be an integer >= 1; got {mini_batch_size!r}")
        form = canonical_form(form, SEQUENCE_FORMS)
        self.hidden_size, self.num_heads, self.head_dim = hidden_size, num_heads, hidden_size // num_heads
        self.inner, self.mini_batch_size, self.form, self.eps = inner, mini_batch_size, form, eps
        self.base_lr = DEFAULT_BASE_LR[inner] if base_lr is None else float(base_lr)
        # set by the trainer's inner-lr warm-up (tttlm.models.inner_lr_scale); not part of the saved state
        self.inner_lr_scale, self.inner_lr_warmup_ratio = 1.0, WARMUP_RATIO[inner]
        self.rope_theta, self.use_gate, self.share_qk = rope_theta, use_gate, share_qk
        self.inner_norm, self.learn_init, self.learn_lr = inner_norm, learn_init, learn_lr
        heads, d, std = num_heads, self.head_dim, initializer_range

        def linear() -> nn.Linear:
            layer = nn.Linear(hidden_size, hidden_size, bias=False)
            nn.init.normal_(layer.weight, std=std)
            return layer

        if share_qk:
            self.qk_proj = linear()
            self.conv_q = CausalConv(hidden_size, conv_kernel)
            self.conv_k = CausalConv(hidden_size, conv_kernel)
        else:
            self.q_proj, self.k_proj = linear(), linear()
        self.v_proj, self.o_proj = linear(), linear()
        if use_gate:
            self.g_proj = linear()
        self.initializer_range = initializer_range
        if learn_lr:
            self.lr_weight = nn.Parameter(torch.empty(heads, hidden_size))
            self.lr_bias = nn.Parameter(torch.empty(heads))
        self.token_offset = nn.Parameter(torch.empty(mini_batch_size))
        inner_hidden = d if inner == "linear" else mlp_ratio * d
        inner_shapes = {"W1": (heads, d, inner_hidden), "b1": (heads, inner_hidden)}
        if inner == "mlp":
            inner_shapes.update(W2=(heads, inner_hidden, d), b2=(heads, d))
        for name, shape in inner_shapes.items():
            if learn_init:
                setattr(self, name, nn.Parameter(torch.empty(shape)))
            else:
                self.register_buffer(name, torch.empty(shape))
        if inner_norm:
            self.ttt_norm_weight = nn.Parameter(torch.empty(heads, d))
            self.ttt_norm_bias = nn.Parameter(torch.empty(heads, d))
        self.reset_parameters()
        self.post_norm = nn.LayerNorm(hidden_size, eps=eps)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise this layer's own parameters (not its submodules): W0, θ_lr ~ N(0, initializer_range);
        inner biases, b_lr and δ zero; inner LayerNorm identity. A fixed TTT-Linear W0 (``learn_init=False``) is
        zero."""
        random_init = self.learn_init or self.inner == "mlp"
        for weight in (self.W1 if random_init else None, getattr(self, "W2", None), getattr(self, "lr_weight", None)):
            if weight is not None:
                nn.init.normal_(weight, std=self.initializer_range)
        zeros = (None if random_init else self.W1, self.b1, getattr(self, "b2", None), self.token_offset)
        for zero in (*zeros, getattr(self, "lr_bias", None), getattr(self, "ttt_norm_bias", None)):
            if zero is not None:
                nn.init.zeros_(zero)
        if self.inner_norm:
            nn.init.ones_(self.ttt_norm_weight)

    def inner_params(self) -> tuple[Tensor, ...]:
        """The initial inner weights W0: (W1, b1) or (W1, b1, W2, b2) (buffers when ``learn_init`` is False)."""
        return (self.W1, self.b1) if self.inner == "linear" else (self.W1, self.b1, self.W2, self.b2)

    def forward(self, x: Tensor, cache: TTTLayerCache | None = None) -> tuple[Tensor, TTTLayerCache]:
        """x: (batch, seq, hidden) normalised block input; ``cache`` continues a stream. Returns (y, cache)."""
        seq = x.shape[1]
        start = 0 if cache is None else cache.state.position
        conv_q = conv_k = None
        if self.share_qk:
            qk = self.qk_proj(x)
            q, conv_q = self.conv_q(qk, None if cache is None else cache.conv_q)
            k, conv_k = self.conv_k(qk, None if cache is None else cache.conv_k)
        else:
            q, k = self.q_proj(x), self.k_proj(x)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k, self.v_proj(x)))
        positions = (start + torch.arange(seq, device=x.device)) % self.mini_batch_size
        cos, sin = rope_angles(positions, self.head_dim, self.rope_theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        base_lr = self.inner_lr_scale * self.base_lr
        if self.learn_lr:
            lr = base_lr / self.head_dim * torch.sigmoid(x @ self.lr_weight.t().to(x.dtype) + self.lr_bias)
        else:
            lr = x.new_full((*x.shape[:2], self.num_heads), base_lr / self.head_dim * 0.5)  # sigmoid(0)

        # The inner loop runs in at least float32 (also under bf16 autocast or in a bf16 model): its state is
        # accumulated over the whole sequence and its gradients go through a LayerNorm backward.
        dtype = torch.promote_types(self.W1.dtype, torch.float32)
        # the op's unchecked core: the layer's inputs are valid by construction, so nothing is re-checked per call
        op = LINEAR_FORMS if self.inner == "linear" else MLP_FORMS
        form = "step" if seq == 1 and self.form == "dual" else self.form
        norm = (self.ttt_norm_weight, self.ttt_norm_bias) if self.inner_norm else (None, None)
        inner = tuple(p.to(dtype) for p in self.inner_params())
        with torch.autocast(x.device.type, enabled=False):
            z, state = run_form(
                op,
                form,
                *(t.to(dtype) for t in (q, k, v, lr)),
                inner,
                *(None if p is None else p.to(dtype) for p in norm),
                self.token_offset.to(dtype),
                None if cache is None else cache.state,
                self.eps,
                inner[0].shape[-1] if self.inner == "mlp" else None,
            )
        z = self.post_norm(z.flatten(-2).to(x.dtype))
        if self.use_gate:
            z = gelu_tanh(self.g_proj(x)) * z
        return self.o_proj(z), TTTLayerCache(state, conv_q, conv_k)


@dataclass(frozen=True)
class TTTLayerSpec:
    """Every knob of a ``TTTLayer`` but its width, as a model config holds them for its TTT layers: each config
    that has TTT layers builds one (``ttt_layer_spec()``), and every construction site calls ``build``, so no family
    drops a knob. The fields are ``TTTLayer``'s arguments of the same names."""

    num_heads: int
    inner: str = "linear"
    mini_batch_size: int = 16
    base_lr: float | None = None
    rope_theta: float = 10000.0
    use_gate: bool = True
    share_qk: bool = False
    conv_kernel: int = 4
    mlp_ratio: int = 4
    form: str = "dual"
    eps: float = 1e-6
    initializer_range: float = 0.02
    inner_norm: bool = True
    learn_init: bool = True
    learn_lr: bool = True

    def build(self, hidden_size: int) -> TTTLayer:
        """The layer of width ``hidden_size`` with these knobs."""
        return TTTLayer(hidden_size, **dataclasses.asdict(self))


class TTTLinear(TTTLayer):
    """TTT layer whose hidden state is a linear model (``TTTLayer(inner="linear")``)."""

    def __init__(self, hidden_size: int, num_heads: int, **kwargs: object) -> None:
        super().__init__(hidden_size, num_heads, "linear", **kwargs)  # type: ignore[arg-type]


class TTTMLP(TTTLayer):
    """TTT layer whose hidden state is a two-layer MLP (``TTTLayer(inner="mlp")``)."""

    def __init__(self, hidden_size: int, num_heads: int, **kwargs: object) -> None:
        super().__init__(hidden_size, num_heads, "mlp", **kwargs)  # type: ignore[arg-type]
