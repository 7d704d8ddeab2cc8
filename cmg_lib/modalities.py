"""Per-modality networks of Uni-Code: the text front-end, the semantic encoder Phi, the specific encoder Psi and the
decoder D of paper Eq. 1 and Eq. 3, built from a ``ModalitySpec`` so that one code path serves any modality set.

Shapes follow the batch contract (``cmg_lib/data/schema.py``): ``vector`` and ``tokens`` inputs are ``(B, T, F)``,
``grid`` inputs ``(B, T, H, W, C)``. Architecture facts cite book/differences.md#architecture, #text-modality.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModalitySpec, ModelConfig
from .layers import SmallMapConv


class TokenFrontEnd(nn.Module):
    """2-layer bidirectional LSTM over the token slots, ``(B, T, F) -> (B, T, 2 * text_lstm_hidden)``.

    Released ``Text_ar_lstm`` (book/differences.md#text-modality): zero initial states, trained jointly with the main
    optimiser. Its output feeds both text encoders *and* is the text reconstruction target
    (book/differences.md#architecture); the target is not detached, as released, so the LSTM also receives the
    reconstruction gradient of a moving target.
    """

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.out_dim = 2 * hidden
        self.lstm = nn.LSTM(in_dim, hidden, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, tokens: Tensor) -> Tensor:
        out, _ = self.lstm(tokens)
        return out


class GridAttentionPool(nn.Module):
    """Channel attention then spatial attention pooling of one ``H x W x C`` map per segment -> ``C`` features.

    Released ``Video_Semantic_Encoder`` (book/differences.md#architecture): SE block
    ``att = sigmoid(W2 ReLU(W1 mean_hw v))`` (C -> C/8 -> C, no bias), ``v' = v * att + v``; then a query
    ``ReLU(A_self v') * ReLU(A_ave mean_hw v')`` (C -> C/2) scored by ``tanh(w . q)``. The corrected form normalises
    the scores with a softmax over the H*W positions (weighted mean); ``released_quirks=True`` reproduces the released
    softmax over a size-1 axis, which is identically 1, i.e. sum pooling over the positions with zero gradient into
    the attention weights.
    """

    def __init__(self, channels: int, released_quirks: bool):
        super().__init__()
        squeeze = max(channels // 8, 1)
        attn = max(channels // 2, 1)
        self.se_down = nn.Linear(channels, squeeze, bias=False)
        self.se_up = nn.Linear(squeeze, channels, bias=False)
        self.query_mean = nn.Linear(channels, attn)
        self.query_self = nn.Linear(channels, attn)
        self.score = nn.Linear(attn, 1)
        self.released_quirks = released_quirks

    def forward(self, v: Tensor) -> Tensor:
        """``v``: ``(N, P, C)`` with P = H*W positions -> ``(N, C)``."""
        att = torch.sigmoid(self.se_up(F.relu(self.se_down(v.mean(dim=1)))))
        v = v * att.unsqueeze(1) + v
        query = F.relu(self.query_self(v)) * F.relu(self.query_mean(v.mean(dim=1))).unsqueeze(1)
        scores = torch.tanh(self.score(query))                      # (N, P, 1)
        if self.released_quirks:
            weights = torch.softmax(scores, dim=-1)                 # softmax over the size-1 axis: all ones
        else:
            weights = torch.softmax(scores, dim=1)                  # softmax over the P positions
        return (weights * v).sum(dim=1)


class SemanticEncoder(nn.Module):
    """Phi^m (Eq. 1): ``(B, T, *in) -> z (B, T, D)``.

    Grid inputs are first pooled by ``GridAttentionPool``. Then, as released (``InternalTemporalRelationModule``,
    book/differences.md#architecture): ``Linear(in -> D)`` and a post-LN transformer encoder over the T segments
    (``n_layers``, ``n_heads``, ``ffn_dim``, ``dropout``, ReLU FFN), no positional encoding and no mask.
    """

    def __init__(self, spec: ModalitySpec, cfg: ModelConfig, in_dim: int):
        super().__init__()
        self.kind = spec.kind
        self.pool = GridAttentionPool(in_dim, cfg.released_quirks) if spec.kind == "grid" else None
        self.project = nn.Linear(in_dim, cfg.hidden_dim)
        layer = nn.TransformerEncoderLayer(cfg.hidden_dim, cfg.n_heads, cfg.ffn_dim, cfg.dropout,
                                           activation="relu", batch_first=True, norm_first=False)
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        if self.pool is not None:
            x = self.pool(x.reshape(b * t, -1, x.shape[-1])).reshape(b, t, -1)
        return self.transformer(self.project(x))


def _grid_padding(side: int) -> int:
    """Padding of a 3x3 conv: shrink by 2 while the input side is at least 5 (released 7 -> 5 -> 3), else keep it."""
    return 0 if side >= 5 else 1


class ResidualBlock(nn.Module):
    """Released ``ResidualStack`` with one layer: ``ReLU(x + Conv1x1(ReLU(Conv3x3(ReLU(x)))))``, no biases;
    channels-last ``(N, H, W, C)``."""

    def __init__(self, channels: int, impl: str = "gemm"):
        super().__init__()
        self.conv3 = SmallMapConv(channels, channels, 3, padding=1, bias=False, impl=impl)
        self.conv1 = SmallMapConv(channels, channels, 1, bias=False, impl=impl)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv1(F.relu(self.conv3(F.relu(x)))))


class SpecificEncoder(nn.Module):
    """Psi^m (Eq. 1): returns ``(specific, club_feature)``.

    * ``vector`` / ``tokens``: ``ReLU(Linear(in -> specific_dim))`` (released ``Audio_Encoder`` / ``Text_Encoder``),
      shape ``(B, T, S)``; the CLUB feature is that output (a ``Linear`` to ``club_dim`` is added only when
      ``club_dim != specific_dim``).
    * ``grid`` (released ``Video_Encoder``, book/differences.md#architecture): per segment, ``Conv3x3(C -> S/2)``, ReLU,
      ``Conv3x3(S/2 -> S)``, ReLU, ``Conv1x1(S -> S)``, ``ResidualBlock(S)``, all ``SmallMapConv`` on channels-last
      maps; a 3x3 conv shrinks the side by 2 while it is >= 5 (7 -> 5 -> 3 as released, 5 -> 3 -> 3 for
      AV-Digits). Output ``(B, T, h, w, S)``. The CLUB feature is the spatial mean, then ``Linear(S -> S/2)``,
      ReLU, ``Linear(S/2 -> club_dim)`` (released 2048 -> 1024 -> 512).
    Without CLUB (``club_head=False``) no CLUB head is built and the returned CLUB feature is None.
    ``club_target="decoder_input"`` (book/differences.md#club-target): no CLUB head either; the CLUB feature is what the
    decoder reads, the specific output itself (``vector``/``tokens``) or its spatial mean (``grid``), width S.
    """

    def __init__(self, spec: ModalitySpec, in_dim: int, club_head: bool = True, conv_impl: str = "gemm",
                 club_target: str = "projection"):
        super().__init__()
        self.kind = spec.kind
        s = spec.specific_dim
        if spec.kind == "grid":
            h = spec.feature_shape[0]
            self.paddings = (_grid_padding(h), _grid_padding(h - 2 * (1 - _grid_padding(h))))
            self.convs = nn.Sequential(
                SmallMapConv(in_dim, s // 2, 3, padding=self.paddings[0], impl=conv_impl), nn.ReLU(),
                SmallMapConv(s // 2, s, 3, padding=self.paddings[1], impl=conv_impl), nn.ReLU(),
                SmallMapConv(s, s, 1, impl=conv_impl), ResidualBlock(s, conv_impl))
            self.club_head = (nn.Sequential(nn.Linear(s, s // 2), nn.ReLU(), nn.Linear(s // 2, spec.club_dim))
                              if club_head and club_target == "projection" else None)
        else:
            self.paddings = ()
            self.linear = nn.Linear(in_dim, s)
            self.club_head = (nn.Linear(s, spec.club_dim)
                              if club_head and club_target == "projection" and spec.club_dim != s else None)
        self.returns_club = club_head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind != "grid":
            specific = F.relu(self.linear(x))
            if not self.returns_club:
                return specific, None
            return specific, specific if self.club_head is None else self.club_head(specific)
        b, t, h, w, c = x.shape
        maps = self.convs(x.reshape(b * t, h, w, c))                          # (BT, h', w', S)
        club = None
        if self.returns_club:
            pooled = maps.mean(dim=(1, 2))
            club = (pooled if self.club_head is None else self.club_head(pooled)).reshape(b, t, -1)
        return maps.reshape(b, t, *maps.shape[1:]), club


class Decoder(nn.Module):
    """D(z_hat; z_bar) of Eq. 3 (released ``*_Decoder``, book/differences.md#architecture).

    ``Linear(D -> D)`` on the quantized code, concatenated with the specific features, then
    * ``vector`` / ``tokens``: ``Linear(D + S -> out)``;
    * ``grid``: the code broadcast over the h x w map, ``ConvT3x3(D + S -> S/2)``, ``ResidualBlock(S/2)``,
      ``ConvT3x3(S/2 -> C)``, ReLU, ``ConvT1x1(C -> C)``, mirroring the encoder's paddings (released 3 -> 5 -> 7).
    ``loss`` is the MSE to the target (the raw input; for tokens the front-end output, as released).
    """

    def __init__(self, spec: ModalitySpec, cfg: ModelConfig, out_dim: int, paddings: tuple[int, ...]):
        super().__init__()
        self.kind = spec.kind
        d, s = cfg.hidden_dim, spec.specific_dim
        self.code_proj = nn.Linear(d, d)
        if spec.kind == "grid":
            impl = cfg.conv_impl
            self.deconvs = nn.Sequential(
                SmallMapConv(d + s, s // 2, 3, padding=paddings[1], transposed=True, impl=impl),
                ResidualBlock(s // 2, impl),
                SmallMapConv(s // 2, out_dim, 3, padding=paddings[0], transposed=True, impl=impl), nn.ReLU(),
                SmallMapConv(out_dim, out_dim, 1, transposed=True, impl=impl))
        else:
            self.out = nn.Linear(d + s, out_dim)

    def forward(self, quantized: Tensor, specific: Tensor, fast: bool = True) -> Tensor:
        """``quantized (B,T,D)``, ``specific`` from ``SpecificEncoder`` -> reconstruction in the input layout.

        A grid decoder's first layer reads the code at every map position: concatenated there (``fast=False``,
        the plain form) or, the same function, multiplied once per map (``fast``; ``SmallMapConv(constant=...)``).
        """
        code = self.code_proj(quantized)
        if self.kind != "grid":
            return self.out(torch.cat([code, specific], dim=-1))
        b, t, h, w, s = specific.shape
        maps, code = specific.reshape(b * t, h, w, s), code.reshape(b * t, -1)
        first, rest = self.deconvs[0], self.deconvs[1:]
        if fast:
            hidden = first(maps, constant=code)
        else:
            hidden = first(torch.cat([code[:, None, None].expand(-1, h, w, -1), maps], dim=-1))
        recon = rest(hidden)                                                      # (BT, H, W, C)
        return recon.reshape(b, t, *recon.shape[1:])

    @staticmethod
    def loss(recon: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(recon, target)


def input_dim(spec: ModalitySpec, cfg: ModelConfig) -> int:
    """Width that Phi and Psi see per position: F (vector), C (grid), 2 * text_lstm_hidden (tokens)."""
    if spec.kind == "tokens":
        return 2 * cfg.text_lstm_hidden
    return spec.feature_shape[-1]


def club_feature_dim(spec: ModalitySpec, cfg: ModelConfig) -> int:
    """Width of the CLUB feature y of one modality: ``club_dim``, or S for ``club_target="decoder_input"``."""
    return spec.specific_dim if cfg.club_target == "decoder_input" else spec.club_dim


def build_modality(spec: ModalitySpec, cfg: ModelConfig) -> dict[str, nn.Module | None]:
    """The four networks of one modality: ``front_end`` (tokens only, else None), ``semantic``, ``specific``,
    ``decoder``."""
    dim = input_dim(spec, cfg)
    front = TokenFrontEnd(spec.feature_shape[-1], cfg.text_lstm_hidden) if spec.kind == "tokens" else None
    specific = SpecificEncoder(spec, dim, club_head=cfg.club, conv_impl=cfg.conv_impl, club_target=cfg.club_target)
    return {"front_end": front, "semantic": SemanticEncoder(spec, cfg, dim), "specific": specific,
            "decoder": Decoder(spec, cfg, dim, specific.paddings)}
