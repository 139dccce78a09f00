"""The Querying Transformer (BLIP-2, as BOSSA uses it): K learned queries read a frozen audio
encoder's frames through cross-attention and come out as a style representation.

Two streams share each layer's self-attention: the query stream (queries, which also cross-attend
the audio frames) and the symbolic stream (piano tokens, embedded by the frozen LM's token
embedding and projected in). Each stream has its own feed-forward network. What the streams may
see of each other is the pre-training objective's business, so there is one entry per mask:

- `queries`: the query stream alone (unimodal), what the arranger's prefix is made of;
- `symbolic`: the symbolic stream alone, bidirectional (unimodal), its first token summing it up;
- `joint`: both, every position seeing every other (audio–symbolic matching);
- `causal`: both, queries seeing queries only, tokens seeing every query and the tokens before
  them (audio-grounded symbolic generation).

Pre-norm layers; the pre-training heads (contrastive projections, matching logit, next-token
features tied to the LM's embedding) live here as in BLIP-2; losses live with the recipe.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class QFormerConfig:
    n_queries: int = 32
    d_model: int = 256
    n_layers: int = 2
    n_heads: int = 4
    ffn_hidden: int = 1024
    dropout: float = 0.1
    max_tokens: int = 512  # positions of the symbolic stream
    embed_dim: int = 128  # the contrastive space


def _ffn(d: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d),
                         nn.Dropout(dropout))


class QFormerLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, ffn_hidden: int, dropout: float):
        super().__init__()
        self.self_norm = nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.cross_norm = nn.LayerNorm(d)
        self.cross_attn = nn.MultiheadAttention(d, n_heads, dropout=dropout, batch_first=True)
        self.query_ffn = _ffn(d, ffn_hidden, dropout)
        self.token_ffn = _ffn(d, ffn_hidden, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, q, t, frames, mask, padding):
        """q (B, K, d) or None, t (B, L, d) or None; frames (B, F, d) for the queries to read;
        mask (K+L, K+L) True where attention is not allowed; padding (B, K+L) True at padding."""
        x = torch.cat([s for s in (q, t) if s is not None], dim=1)
        h = self.self_norm(x)
        attended = self.self_attn(h, h, h, attn_mask=mask, key_padding_mask=padding, need_weights=False)[0]
        x = x + self.drop(attended)
        k = 0 if q is None else q.shape[1]
        q, t = (x[:, :k], x[:, k:]) if q is not None else (None, x)
        if q is not None:
            h = self.cross_norm(q)
            q = q + self.drop(self.cross_attn(h, frames, frames, need_weights=False)[0])
            q = q + self.query_ffn(q)
        if t is not None and t.shape[1]:
            t = t + self.token_ffn(t)
        return q, t


class QFormer(nn.Module):
    def __init__(self, config: QFormerConfig, *, d_audio: int, d_tokens: int):
        """`d_audio`: width of the audio frames; `d_tokens`: width of the token embeddings (the LM's)."""
        super().__init__()
        self.config = config
        d = config.d_model
        self.queries = nn.Parameter(torch.randn(config.n_queries, d) * 0.02)
        # Frames standardised per unit over the batch (running statistics at inference): what every
        # recording's frames share (after per-frame LayerNorm alone, 80% of their variance) would
        # otherwise drown what sets one reference apart.
        self.audio_norm = nn.BatchNorm1d(d_audio, affine=False)
        self.audio_in = nn.Sequential(nn.LayerNorm(d_audio), nn.Linear(d_audio, d))
        self.token_in = nn.Linear(d_tokens, d)
        self.token_pos = nn.Parameter(torch.randn(config.max_tokens, d) * 0.02)
        self.layers = nn.ModuleList(
            QFormerLayer(d, config.n_heads, config.ffn_hidden, config.dropout) for _ in range(config.n_layers)
        )
        self.query_norm = nn.LayerNorm(d)
        self.token_norm = nn.LayerNorm(d)
        # Pre-training heads.
        self.style_proj = nn.Linear(d, config.embed_dim)
        self.symbolic_proj = nn.Linear(d, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.match_head = nn.Linear(d, 1)
        self.token_head = nn.Linear(d, d_tokens)  # then against the LM's token embeddings

    def _run(self, frames, tokens, padding, *, queries: bool, mask_kind: str):
        """frames (B, F, d_audio) or None; tokens (B, L, d_tokens) or None; padding (B, L) True at
        padded tokens. Returns (query states, token states), each normed, or None."""
        batch = (frames if frames is not None else tokens).shape[0]
        q = self.queries.expand(batch, -1, -1) if queries else None
        a = self.audio_in(self.audio_norm(frames.transpose(1, 2)).transpose(1, 2)) if queries else None
        t = None
        if tokens is not None:
            if tokens.shape[1] > self.config.max_tokens:
                raise ValueError(f"{tokens.shape[1]} tokens exceed the Q-Former's {self.config.max_tokens}")
            t = self.token_in(tokens) + self.token_pos[: tokens.shape[1]]
        k = 0 if q is None else q.shape[1]
        n = k + (0 if t is None else t.shape[1])
        mask = None
        if mask_kind == "causal":
            mask = torch.zeros(n, n, dtype=torch.bool, device=self.queries.device)
            past_only = torch.ones(n - k, n - k, dtype=torch.bool, device=mask.device).triu(1)
            mask[k:, k:] = past_only
            mask[:k, k:] = True  # queries never see the tokens; tokens see every query
        pad = None
        if padding is not None:
            pad = torch.cat([padding.new_zeros(batch, k), padding], dim=1) if k else padding
        for layer in self.layers:
            q, t = layer(q, t, a, mask, pad)
        return (None if q is None else self.query_norm(q)), (None if t is None else self.token_norm(t))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """The query stream alone: audio frames (B, F, d_audio) → style (B, K, d_model)."""
        return self._run(frames, None, None, queries=True, mask_kind="none")[0]

    def symbolic(self, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """The symbolic stream alone, bidirectional: (B, L, d_tokens) → (B, L, d_model)."""
        return self._run(None, tokens, padding, queries=False, mask_kind="none")[1]

    def joint(self, frames: torch.Tensor, tokens: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        """Both streams seeing each other: the matching logit (B,), averaged over the queries."""
        q, _ = self._run(frames, tokens, padding, queries=True, mask_kind="none")
        return self.match_head(q).squeeze(-1).mean(dim=1)

    def causal(self, frames: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens reading the queries and their own past: next-token features (B, L, d_tokens)."""
        _, t = self._run(frames, tokens, None, queries=True, mask_kind="causal")
        return self.token_head(t)
