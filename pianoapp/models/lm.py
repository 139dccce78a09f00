"""The piano language model: a decoder-only, LLaMA-style transformer over piano tokens.

RMSNorm, rotary positions, SwiGLU, no biases, input and output embeddings tied. `forward` returns
logits and a key/value cache so generation can feed one token at a time; sampling lives in a
service. An optional `prefix_embeds` (B, P, d) is prepended before the token embeddings (the
arranger feeds its conditioning this way). Attention projections are plain nn.Linear named
q_proj/k_proj/v_proj/o_proj, which is what LoRA adapters target.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

KVCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (k, v), each (B, heads, T, head_dim)


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

    def forward(self, x, cos, sin, past: tuple[torch.Tensor, torch.Tensor] | None):
        B, T, _ = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        n_past = k.shape[2] - T
        if n_past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif T == 1:  # one new query sees every position: no mask to build
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # new queries see every cached position and the new ones up to themselves
            mask = torch.ones(T, k.shape[2], dtype=torch.bool, device=x.device).tril(diagonal=n_past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), (k, v)


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

    def forward(self, x, cos, sin, past):
        h, kv = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + h
        return x + self.ffn(self.ffn_norm(x)), kv


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
        Returns the logits and the cache extended by this call's keys and values.
        """
        x = self.tok_emb(ids)
        if prefix_embeds is not None:
            x = torch.cat([prefix_embeds.to(x.dtype), x], dim=1)
        start = cache[0][0].shape[2] if cache else 0
        end = start + x.shape[1]
        if end > self.config.context_len:
            raise ValueError(f"{end} positions exceed the model's context of {self.config.context_len}")
        cos, sin = self.rope_cos[start:end], self.rope_sin[start:end]
        new_cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, cache[i] if cache else None)
            new_cache.append(kv)
        logits = F.linear(self.norm(x), self.tok_emb.weight)  # tied output embedding
        return logits, new_cache

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
