"""The piano language model: a decoder-only, LLaMA-style transformer over piano tokens.

RMSNorm, rotary positions, SwiGLU, no biases, input and output embeddings tied. `forward` returns
logits and a key/value cache (`KVCache`) so generation can feed one token at a time; sampling lives
in `pianoapp.sampling`. An optional `prefix_embeds` (B, P, d) is prepended before the token
embeddings (the arranger feeds its conditioning this way). Attention projections are plain
nn.Linear named q_proj/k_proj/v_proj/o_proj, which is what LoRA adapters target.
`cpu_inference_copy` makes the int8 copy that generation on a CPU runs.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of every position seen so far, per layer, each (B, heads, room, head_dim) with
    positions [:length] filled. Extending it writes the new positions in place: growing it with
    torch.cat copied the whole cache at every decoding step (a third of a step's time on a CPU).

    The forward pass that starts a cache keeps its own keys and values (no copy, so training pays
    nothing); the first call that extends it moves them into buffers with room for `capacity`
    positions, allocated once, of `dtype` (None: the keys' own). A cache is extended in place: an
    older state cannot be resumed.
    """

    def __init__(self, capacity: int, dtype: torch.dtype | None = None):
        self.capacity, self.dtype = capacity, dtype
        self.length = 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put a call's keys and values (B, heads, T, head_dim) after the `length` cached ones of
        `layer`; return all of that layer's keys and values so far. The caller advances `length`."""
        start, end = self.length, self.length + k.shape[2]
        if layer == len(self.keys):  # a new cache: keep the tensors
            self.keys.append(k)
            self.values.append(v)
            return k, v
        if end > self.keys[layer].shape[2]:
            self.keys[layer] = self._with_room(self.keys[layer])
            self.values[layer] = self._with_room(self.values[layer])
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _with_room(self, filled: torch.Tensor) -> torch.Tensor:
        dtype = self.dtype or filled.dtype
        buffer = filled.new_empty(*filled.shape[:2], self.capacity, filled.shape[3], dtype=dtype)
        buffer[:, :, : self.length] = filled[:, :, : self.length]
        return buffer


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32: bf16 squares lose too much precision.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight


def rotary_tables(head_dim: int, length: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)  # (T, head_dim/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (first half, second half) of x (B, H, T, D) by each position's angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return rotated.type_as(x)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, cos, sin, cache: KVCache, layer: int):
        B, T, _ = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = cache.store(layer, k, v)
        dtype, q = q.dtype, q.to(k.dtype)  # a cache of another dtype (cpu_inference_copy's) sets attention's
        n_past = k.shape[2] - T
        if n_past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1:  # one new query sees every position: no mask to build
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # new queries see every cached position and the new ones up to themselves
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=n_past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.to(dtype).transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, ffn_hidden: int, eps: float):
        super().__init__()
        self.attn_norm = RMSNorm(d_model, eps)
        self.attn = Attention(d_model, n_heads)
        self.ffn_norm = RMSNorm(d_model, eps)
        self.ffn = SwiGLU(d_model, ffn_hidden)

    def forward(self, x, cos, sin, cache, layer):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, layer)
        return x + self.ffn(self.ffn_norm(x))


@dataclass
class LMConfig:
    vocab_size: int  # set from the tokenizer the model is trained with
    context_len: int = 1024  # positions, prefix embeddings included
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    ffn_hidden: int = 1408  # SwiGLU width, about 8/3 of d_model rounded to a multiple of 64
    rope_base: float = 10_000.0
    norm_eps: float = 1e-5


class PianoLM(nn.Module):
    def __init__(self, config: LMConfig):
        super().__init__()
        if config.d_model % config.n_heads or (config.d_model // config.n_heads) % 2:
            raise ValueError("d_model must split into an even head size per head")
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(
            Block(config.d_model, config.n_heads, config.ffn_hidden, config.norm_eps)
            for _ in range(config.n_layers)
        )
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        # What cpu_inference_copy changes: the output layer (None: tied to tok_emb) and the dtype of
        # the KV cache's buffers (None: the activations').
        self.head: nn.Module | None = None
        self.cache_dtype: torch.dtype | None = None
        cos, sin = rotary_tables(config.d_model // config.n_heads, config.context_len, config.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)  # recomputed, never saved
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        # Scale the projections that write into the residual stream so its variance does not
        # grow with depth (GPT-2).
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        ids: torch.Tensor,
        *,
        prefix_embeds: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits (B, P + T, vocab) for token ids (B, T) after an optional prefix (B, P, d_model).

        With `cache` (from an earlier call) the new positions continue after the cached ones.
        Returns the logits and the cache (a new one, or `cache` itself) holding this call's keys
        and values.
        """
        x = self.tok_emb(ids)
        if prefix_embeds is not None:
            x = torch.cat([prefix_embeds.to(x.dtype), x], dim=1)
        cache = KVCache(self.config.context_len, self.cache_dtype) if cache is None else cache
        start = cache.length
        end = start + x.shape[1]
        if end > self.config.context_len:
            raise ValueError(f"{end} positions exceed the model's context of {self.config.context_len}")
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i)
        cache.length = end
        x = self.norm(x)
        logits = F.linear(x, self.tok_emb.weight) if self.head is None else self.head(x)
        return logits, cache

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Int8Linear(nn.Module):
    """A bias-free nn.Linear for CPU inference: int8 weights with one scale per output channel.

    A decoding step is bound by reading the weights from memory, and int8 is a quarter of fp32's
    bytes. Up to MAX_INT8_ROWS tokens at once go through torch's int8 kernel (bf16 inputs, its fast
    path); more (a prompt) run one fp32 matmul on the dequantised weights, which is faster there.
    """

    MAX_INT8_ROWS = 64

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight", torch.round(w / scale[:, None]).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))  # the int8 kernel takes its inputs' dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if rows > self.MAX_INT8_ROWS:
            return F.linear(x, self.weight.to(x.dtype) * self.scale.to(x.dtype)[:, None])
        y = torch._weight_int8pack_mm(x.reshape(rows, -1).to(torch.bfloat16), self.weight, self.scale)
        return y.view(*x.shape[:-1], -1).to(x.dtype)


def cpu_inference_copy(model: PianoLM) -> PianoLM:
    """A copy of `model` for generation on a CPU: its linear layers and output layer as Int8Linear,
    the KV cache's buffers in bf16 (one-token attention over them is several times faster than in
    fp32), every other tensor shared with `model`.

    Activations stay fp32: bf16 ones would save a little more time per step, but CPU bf16 matmul
    and attention kernels keep compiled code for every sequence length they see, so memory grew by
    about 5 MB with each new prompt length. (Attention over the bf16 cache does the same for each
    new length of a several-token call that extends a cache; one-token steps, and prompts, which
    start a cache, do not.)
    """
    shared = [*model.parameters(), *model.buffers()]
    fast = copy.deepcopy(model, memo={id(t): t for t in shared})
    for module in list(fast.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child.weight))
    fast.head = Int8Linear(model.tok_emb.weight)
    fast.cache_dtype = torch.bfloat16
    return fast
