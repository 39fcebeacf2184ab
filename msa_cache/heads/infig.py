"""INFIG: hierarchical fine-grained + global alignment with the assistance of CLIP, the model (`infig`).

"Integrating Hierarchical Fine-Grained and Global Information for Multimodal
Sentiment Analysis with Assistance of CLIP". The equations (GAM, HFAM, fusion,
loss), which layers each `align` setting aligns, and how this differs from the
paper are in docs/methods.md ("infig"); the options are `InfigConfig` in
heads/catalog.py.

Interface:
- inputs: "text" (tokens + padding mask) and "image" (tokens) of a token cache;
  optionally "clip_image"/"clip_text" pooled features (GAM's CLIP parts, with
  --clip) and cached hidden layers "text@-k", "image@-k" (tokens + mask, from
  `extract --layers`; the trainer passes them because the catalog entry says
  `uses_hidden_layers`). The head is told at construction (via `spec`) which exist.
- `align`: "stack" (the `fit` default) aligns the trainable per-modality stack's
  layers; "encoder" (the `finetune` default) the encoders' own last M layers,
  which fine-tune mode asks the encoders for (`encoder_layers`). Under "encoder"
  GAM's image feature is the ViT's [CLS] (`image/cls`; the catalog entry's
  `image_pool` asks the field chooser, cache/fields.py, for it before the head is
  built; the mean of the tokens where the encoder has none).
- `stack_layers` 0 (the `finetune` default, align="encoder" only): no stack; the
  fusion reads the encoders' own last layer through the input projections.
- `run_record` says which image vector GAM aligned (config.json "head_record").
- `forward` in training records GAM's momentum keys; `optimizer_stepped()` (called
  by the trainers once per optimizer step) does the EMA update and the enqueue, so
  accumulated micro-batches see one queue and one momentum copy. Under
  `logits_only()` (predict, explain) no alignment loss is computed.
- `loss` -> L_sc + lambda_g L_g + lambda_f L_f, logged as "ce", "gam", "hfam".
  Ablations: --no-gam, --no-hfam, --no-clip remove the term and its parameters.
- aux: "attn_image" [B, P], "attn_text" [B, L] (the fusion pooling weights g,
  split; zero on padding; `explain_weights` returns them), "loss_gam"/"loss_hfam"
  (tensors), "global_image"/"global_text" (i_g, t_g) and "key_image"/"key_text"
  (the momentum keys).
- A missing modality (batch.missing; zeros stand in, the default missing input)
  leaves its rows out of the alignment losses: GAM and HFAM align image-text
  pairs, and a row with a side missing has none (its stand-in is neither a
  positive nor enqueued as a key; it can still be an in-batch HFAM negative).
  The classification loss sees every row. Batches with nothing missing compute
  exactly as before.
"""
from __future__ import annotations

import copy
import hashlib

import torch
import torch.nn.functional as F
from torch import nn

from msa_cache.heads.base import Batch, Head, HeadOutput, ModalityInput, ModalitySpec, head_model, masked_ce
from msa_cache.heads.catalog import InfigConfig


def topj_similarity(a: torch.Tensor, a_mask: torch.Tensor, b: torch.Tensor, b_mask: torch.Tensor, j: int) -> torch.Tensor:
    """S[p, q] = mean over real tokens x of a[p] of the mean of x's top-j cosines to the real tokens of b[q].

    a [B, A, d], b [B, C, d], masks bool True = real. Returns [B, B]. When b[q]
    has fewer than j real tokens, all of them are used and the sum is divided by
    that count; padding is never selected (its cosine is -inf before top-k).
    """
    cos = torch.einsum("pad,qcd->pqac", F.normalize(a, dim=-1), F.normalize(b, dim=-1))  # [B, B, A, C]
    return _topj_from_cos(cos, a_mask, b_mask, j)


def _topj_from_cos(cos: torch.Tensor, row_mask: torch.Tensor, col_mask: torch.Tensor, j: int,
                   reverse: bool = False) -> torch.Tensor:
    """cos[p, q, a, c] (a: tokens of p, c: tokens of q) -> S (see topj_similarity).

    reverse=False: rows are the tokens a of p, columns the tokens c of q; returns S[p, q].
    reverse=True: rows are the tokens c of q, columns the tokens a of p; returns S[q, p]. Both
    directions read the one tensor in place (a permuted copy made top-j ~25 % slower).
    """
    col_dim = 2 if reverse else 3
    if bool(col_mask.all()):
        vals = cos  # no padding among the columns (an image grid): skip a pass over B*B*P*L
    else:
        shape = [1, 1, 1, 1]
        shape[0 if reverse else 1], shape[col_dim] = col_mask.shape
        vals = cos.masked_fill(~col_mask.view(shape), float("-inf"))
    vals = vals.topk(min(j, cos.shape[col_dim]), dim=col_dim).values
    chosen = torch.isfinite(vals)  # a -inf pick means that post ran out of real tokens
    # where(), not multiplication: -inf * 0 would be NaN.
    per_token = torch.where(chosen, vals, torch.zeros_like(vals)).sum(col_dim) / chosen.sum(col_dim).clamp(min=1)
    rows = (row_mask[None, :, :] if reverse else row_mask[:, None, :]).to(per_token.dtype)  # [.., .., tokens]
    s = (per_token * rows).sum(-1) / rows.sum(-1).clamp(min=1)  # [p, q]
    return s.t() if reverse else s


def row_keys(ids: list[str]) -> torch.Tensor:
    """A stable int64 per row id (blake2b, not hash(): the queue is saved with the model and may outlive the process)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little", signed=True)
                         for i in ids], dtype=torch.long)


def _layer(width: int, heads: int, dropout: float) -> nn.TransformerEncoderLayer:
    # Pre-norm: trains stably from scratch without warm-up (torch >= 1.10).
    return nn.TransformerEncoderLayer(width, heads, 4 * width, dropout, activation="gelu",
                                      batch_first=True, norm_first=True)


class TokenStack(nn.Module):
    """Projection + learnable CLS + positions + `depth` transformer layers over one modality's tokens."""

    def __init__(self, in_dim: int, num_tokens: int | None, cfg: InfigConfig, depth: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, cfg.width)
        if not depth:  # depth 0: the projection only (no CLS, positions or norm that nothing would read)
            self.layers = nn.ModuleList()
            return
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.width))
        # A CNN grid carries no position of its own; cached text does, but a learned offset is harmless.
        self.pos = nn.Parameter(torch.zeros(1, 1 + num_tokens, cfg.width)) if num_tokens else None
        nn.init.trunc_normal_(self.cls, std=0.02)
        if self.pos is not None:
            nn.init.trunc_normal_(self.pos, std=0.02)
        self.layers = nn.ModuleList([_layer(cfg.width, cfg.num_heads, cfg.dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor):
        """tokens [B, T, d], mask [B, T] -> (projected input [B, T, w], [normed output of each layer [B, 1+T, w]])."""
        x0 = self.proj(tokens)
        if not self.layers:
            return x0, []
        x = torch.cat([self.cls.expand(x0.shape[0], -1, -1), x0], dim=1)
        if self.pos is not None:
            if x.shape[1] > self.pos.shape[1]:
                raise ValueError(f"{x.shape[1] - 1} tokens but the head was built for {self.pos.shape[1] - 1}")
            x = x + self.pos[:, : x.shape[1]]
        pad = torch.cat([mask.new_zeros(mask.shape[0], 1), ~mask], dim=1)  # the CLS is always real
        outs = []
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=pad)
            # One shared final norm for every layer: GAM/HFAM read intermediate layers on the same
            # scale, and centring the tokens makes their cosines less dominated by a common direction.
            outs.append(self.norm(x))
        return x0, outs


def _real(inp: ModalityInput) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens with padding zeroed (so even NaN garbage there cannot leak through 0-weight attention) and the mask."""
    tokens = inp.tokens
    mask = inp.mask if inp.mask is not None else torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return tokens.masked_fill(~mask.unsqueeze(-1), 0.0), mask


def _paired(batch: Batch) -> torch.Tensor | None:
    """[B] bool: rows with both sides there (every key); None when nothing is missing."""
    if not batch.missing:
        return None
    return ~torch.stack(list(batch.missing.values())).any(dim=0)


def _targets(target: torch.Tensor, paired: torch.Tensor | None) -> torch.Tensor:
    """Contrastive targets with unpaired rows ignored (cross_entropy's ignore_index, -100)."""
    return target if paired is None else target.masked_fill(~paired.to(target.device), -100)


@head_model("infig")
class Infig(Head):
    def __init__(self, spec: dict[str, ModalitySpec], num_classes: int, cfg: InfigConfig):
        super().__init__(spec, num_classes, cfg)
        w = cfg.width
        if cfg.hfam and not (cfg.hfam_layers >= 1 and cfg.top_j >= 1):
            raise ValueError("hfam_layers and top_j must be >= 1")
        if cfg.align not in ("stack", "encoder"):
            raise ValueError(f"align must be 'stack' or 'encoder', not '{cfg.align}'")
        self.stacks = nn.ModuleDict({
            m: TokenStack(spec[m].token_dim, spec[m].num_tokens, cfg, cfg.stack_layers) for m in ("image", "text")
        })
        if cfg.align == "stack" and cfg.stack_layers < 1:
            raise ValueError("align=stack aligns the trainable stack's layers: --stack-layers must be >= 1 "
                             "(0 goes with --align encoder)")
        if cfg.gam and cfg.stack_layers and not -cfg.stack_layers <= cfg.gam_layer < cfg.stack_layers:
            raise ValueError(f"gam_layer {cfg.gam_layer} is outside a stack of {cfg.stack_layers} layers")

        # align="encoder": which sides align the encoder's own layers (text always; an image encoder when it
        # gives hidden layers, i.e. a ViT); the others (a CNN grid) align the stack over their tokens.
        self.encoder_side = {m: cfg.align == "encoder" and (m == "text" or any(k.startswith(f"{m}@-") for k in spec))
                             for m in ("image", "text")}
        self.frozen_levels: list[int] = []  # align="stack": k of the "m@-k" modalities used, deepest first
        self.level_proj = nn.ModuleDict()  # projections of cached/hidden layers -k, k >= 2
        if cfg.hfam:
            if cfg.align == "encoder":
                self._build_encoder_levels(spec)
            else:
                self._build_stack_levels(spec)

        self.use_clip = cfg.gam and cfg.clip and "clip_image" in spec and "clip_text" in spec
        if cfg.gam:
            clip_dim = {m: spec[f"clip_{m}"].pooled_dim if self.use_clip else 0 for m in ("image", "text")}
            self.gam_proj = nn.ModuleDict({m: nn.Linear(w + clip_dim[m], cfg.embed) for m in ("image", "text")})
            self.gam_proj_m = copy.deepcopy(self.gam_proj)  # momentum copies: EMA-updated, never by gradients
            self.gam_proj_m.requires_grad_(False)
            self.gam_temp = nn.Parameter(torch.tensor(float(cfg.gam_temp)))
            # Queues start empty (queue_len = 0) rather than random: random negatives are trivially easy.
            self.register_buffer("queue_image", torch.zeros(cfg.queue_size, cfg.embed))
            self.register_buffer("queue_text", torch.zeros(cfg.queue_size, cfg.embed))
            self.register_buffer("queue_ids", torch.zeros(cfg.queue_size, dtype=torch.long))  # row_keys of the keys
            self.register_buffer("queue_has_id", torch.zeros(cfg.queue_size, dtype=torch.bool))
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
            self.register_buffer("queue_len", torch.zeros((), dtype=torch.long))
            self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

        self.type_emb = nn.Parameter(torch.zeros(2, w))  # image, text
        self.fusion = nn.ModuleList([_layer(w, cfg.num_heads, cfg.dropout) for _ in range(cfg.fusion_layers)])
        self.fusion_norm = nn.LayerNorm(w)
        self.pool = nn.Linear(w, 1)  # attention-pooling scores w^T f_i
        self.squeeze = nn.Linear(w, cfg.hidden)  # K = GELU(W K~ + b)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, num_classes))

    def _build_stack_levels(self, spec):
        """align="stack": cached frozen levels are needed only when M exceeds the stack's S + 1."""
        cfg, w = self.cfg, self.cfg.width
        for k in range(2, 2 + max(0, cfg.hfam_layers - cfg.stack_layers - 1)):
            for m in ("image", "text"):
                name = f"{m}@-{k}"
                if name not in spec or spec[name].token_dim is None:
                    raise ValueError(
                        f"hfam_layers={cfg.hfam_layers} needs {cfg.hfam_layers - cfg.stack_layers - 1} cached frozen "
                        f"layer(s) beyond the stack's {cfg.stack_layers} + its input, but modality '{name}' is not "
                        f"in the cache; lower --hfam-layers or raise --stack-layers")
                if spec[name].token_dim != spec[m].token_dim:
                    self.level_proj[name] = nn.Linear(spec[name].token_dim, w)
            self.frozen_levels.append(k)

    def _build_encoder_levels(self, spec):
        """align="encoder": a Linear per hidden layer -2 .. -M of each encoder side; the stack for the others."""
        cfg, w = self.cfg, self.cfg.width
        for m in ("image", "text"):
            if not self.encoder_side[m]:
                if cfg.hfam_layers > cfg.stack_layers + 1:
                    raise ValueError(f"align=encoder: the {m} encoder has no hidden layers (a CNN), so its side "
                                     f"aligns the stack's input + {cfg.stack_layers} layers, fewer than "
                                     f"hfam_layers={cfg.hfam_layers}; give --stack-layers {cfg.hfam_layers - 1} "
                                     "or more (the paper puts transformer layers over ResNet-50's grid) or lower "
                                     "--hfam-layers")
                continue
            for k in range(2, cfg.hfam_layers + 1):
                name = f"{m}@-{k}"
                if name not in spec or spec[name].token_dim is None:
                    raise ValueError(f"align=encoder with hfam_layers={cfg.hfam_layers} needs the {m} encoder's "
                                     f"layers -1..-{cfg.hfam_layers}, but '{name}' is missing; extract with "
                                     f"--layers {','.join(str(-j) for j in range(1, cfg.hfam_layers + 1))}, "
                                     "or use --align stack")
                self.level_proj[name] = nn.Linear(spec[name].token_dim, w)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs saved before the queue kept row ids: their queued keys count as id-less (mask nothing).
        if self.cfg.gam and prefix + "queue_image" in state_dict and prefix + "queue_ids" not in state_dict:
            state_dict[prefix + "queue_ids"] = torch.zeros_like(self.queue_ids)
            state_dict[prefix + "queue_has_id"] = torch.zeros_like(self.queue_has_id)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- GAM ----
    @torch.no_grad()
    def _momentum_update(self):
        m = self.cfg.momentum
        for p, pm in zip(self.gam_proj.parameters(), self.gam_proj_m.parameters()):
            pm.mul_(m).add_(p.detach(), alpha=1.0 - m)

    @torch.no_grad()
    def _enqueue(self, k_image: torch.Tensor, k_text: torch.Tensor, ids: torch.Tensor | None):
        q = self.queue_image.shape[0]
        k_image, k_text = k_image[-q:], k_text[-q:]  # more rows than the queue: keep the last ones
        n = k_image.shape[0]
        idx = (self.queue_ptr + torch.arange(n, device=k_image.device)) % q
        self.queue_image[idx] = k_image.to(self.queue_image.dtype)
        self.queue_text[idx] = k_text.to(self.queue_text.dtype)
        if ids is None:
            self.queue_has_id[idx] = False
        else:
            self.queue_ids[idx] = ids[-q:].to(self.queue_ids.device)
            self.queue_has_id[idx] = True
        self.queue_ptr.copy_((self.queue_ptr + n) % q)
        self.queue_len.copy_((self.queue_len + n).clamp(max=q))

    @torch.no_grad()
    def optimizer_stepped(self):
        """After each optimizer step: EMA of the momentum projections, then enqueue the step's keys."""
        if not self.cfg.gam:
            return
        self._momentum_update()
        if self._pending:
            k_i, k_t, ids = zip(*self._pending)
            ids = None if any(x is None for x in ids) else torch.cat(ids)
            self._enqueue(torch.cat(k_i), torch.cat(k_t), ids)
            self._pending = []

    def _gam(self, i_g: torch.Tensor, t_g: torch.Tensor, ids: list[str], aux: dict,
             paired: torch.Tensor | None = None) -> torch.Tensor:
        temp = self.gam_temp.clamp(0.001, 0.5)
        q_i = F.normalize(self.gam_proj["image"](i_g), dim=-1)
        q_t = F.normalize(self.gam_proj["text"](t_g), dim=-1)
        with torch.no_grad():
            k_i = F.normalize(self.gam_proj_m["image"](i_g), dim=-1)
            k_t = F.normalize(self.gam_proj_m["text"](t_g), dim=-1)
        # A negative is a filled slot holding another row's key (the queue keeps the keys' row ids).
        keys = row_keys(ids).to(i_g.device) if len(ids) == q_i.shape[0] else None
        negative = (torch.arange(self.queue_image.shape[0], device=i_g.device) < self.queue_len).expand(q_i.shape[0], -1)
        if keys is not None:
            negative = negative & ~(self.queue_has_id[None, :] & (self.queue_ids[None, :] == keys[:, None]))

        def nce(q, k_pos, queue):
            pos = (q * k_pos).sum(-1, keepdim=True).float() / temp  # [B, 1]
            neg = (q @ queue.to(q.dtype).t()).float() / temp  # [B, Q]
            # Mask after dividing: -inf / T would give the temperature a 0 * inf = NaN gradient.
            logits = torch.cat([pos, neg.masked_fill(~negative, float("-inf"))], dim=1)
            return F.cross_entropy(logits, _targets(torch.zeros(q.shape[0], dtype=torch.long, device=q.device),
                                                    paired))

        if paired is not None and not bool(paired.any()):  # no pair in the batch: nothing to align
            loss = q_i.sum() * 0.0
        else:
            # The queues change only in optimizer_stepped(), after backward: no copy needed for autograd.
            loss = (nce(q_i, k_t, self.queue_text) + nce(q_t, k_i, self.queue_image)) / 2
        if self.training:
            if paired is None:
                self._pending.append((k_i, k_t, keys))
            else:  # a stand-in's key is no row's key
                self._pending.append((k_i[paired], k_t[paired], None if keys is None else keys[paired]))
        aux.update(global_image=i_g.detach(), global_text=t_g.detach(), key_image=k_i, key_text=k_t)
        return loss

    def _global(self, m: str, batch: Batch, x0: torch.Tensor, outs: list[torch.Tensor]) -> torch.Tensor:
        """GAM's feature of side m: the encoder's last-layer CLS (align="encoder") or the stack's CLS."""
        if not self.encoder_side[m] and outs:
            return outs[self.cfg.gam_layer][:, 0]
        if m == "text":
            return x0[:, 0]  # the cached text CLS at position 0, through the input projection
        # The image vector the field chooser gave (image_pool="cls"): a ViT's [CLS] (image/cls); an encoder
        # without one (a CNN with no stack over its grid) gives the mean of its tokens (image/pooled).
        return self.stacks[m].proj(batch.inputs[m].pooled)

    def run_record(self, fields: dict) -> dict:
        """Which image vector GAM aligned: the encoder's [CLS], the mean of its tokens, or the stack's CLS."""
        if not self.cfg.gam:
            return {}
        pooled = (fields.get("image") or {}).get("pooled")
        if self.encoder_side["image"] or not self.cfg.stack_layers:
            what = ("the image encoder's [CLS]" if pooled == "image/cls"
                    else "the mean of the image encoder's tokens (it has no [CLS])")
            return {"gam_image": f"{pooled}: {what}"}
        return {"gam_image": f"the image stack's CLS at layer {self.cfg.gam_layer}"}

    # ---- HFAM ----
    def _hidden(self, m: str, k: int, batch: Batch, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        name = f"{m}@-{k}"
        inp = batch.inputs.get(name)
        if inp is None or inp.tokens is None:
            raise ValueError(f"the head was built to align layer '{name}' but the batch lacks it")
        lmask = inp.mask if inp.mask is not None else mask
        tokens = inp.tokens.masked_fill(~lmask.unsqueeze(-1), 0.0)
        proj = self.level_proj[name] if name in self.level_proj else self.stacks[m].proj
        return proj(tokens), lmask

    def _levels(self, m: str, batch: Batch, x0: torch.Tensor, outs: list[torch.Tensor], mask: torch.Tensor):
        """The last M (tokens, mask) levels of modality m, shallow -> deep (stack CLS dropped)."""
        M = self.cfg.hfam_layers
        if self.encoder_side[m]:  # layers -M .. -2 of the encoder, then its last layer (the stack's input)
            return [self._hidden(m, k, batch, mask) for k in range(M, 1, -1)] + [(x0, mask)]
        levels = [self._hidden(m, k, batch, mask) for k in reversed(self.frozen_levels)]  # shallowest first
        levels.append((x0, mask))
        levels += [(h[:, 1:], mask) for h in outs]
        return levels[-M:]

    def _hfam(self, image_levels, text_levels, paired: torch.Tensor | None = None) -> torch.Tensor:
        if paired is not None and not bool(paired.any()):  # no pair in the batch: nothing to align
            return image_levels[0][0].sum() * 0.0
        losses = []
        for (img, img_mask), (txt, txt_mask) in zip(image_levels, text_levels):
            # One cosine tensor serves both directions. Memory is B*B*P*L per level.
            cos = torch.einsum("pad,qcd->pqac", F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1))
            s_i2t = _topj_from_cos(cos, img_mask, txt_mask, self.cfg.top_j)  # [B_image, B_text]
            s_t2i = _topj_from_cos(cos, txt_mask, img_mask, self.cfg.top_j, reverse=True)  # [B_text, B_image]
            target = _targets(torch.arange(img.shape[0], device=img.device), paired)
            l_i = F.cross_entropy(s_i2t / self.cfg.hfam_tau, target)
            l_t = F.cross_entropy(s_t2i / self.cfg.hfam_tau, target)
            losses.append((l_t + l_i) / 2)
        return torch.stack(losses).mean()

    def forward(self, batch: Batch) -> HeadOutput:
        cfg, aux = self.cfg, {}
        img_tokens, img_mask = _real(batch.inputs["image"])
        txt_tokens, txt_mask = _real(batch.inputs["text"])
        img_x0, img_outs = self.stacks["image"](img_tokens, img_mask)
        txt_x0, txt_outs = self.stacks["text"](txt_tokens, txt_mask)

        if cfg.gam and not self.predicting:
            i_g = self._global("image", batch, img_x0, img_outs)
            t_g = self._global("text", batch, txt_x0, txt_outs)
            if self.use_clip:
                missing = [m for m in ("clip_image", "clip_text") if m not in batch.inputs]
                if missing:
                    raise ValueError(f"the head was built with CLIP features but the batch lacks {missing}")
                i_g = torch.cat([i_g, batch.inputs["clip_image"].pooled.to(i_g.dtype)], dim=-1)
                t_g = torch.cat([t_g, batch.inputs["clip_text"].pooled.to(t_g.dtype)], dim=-1)
            aux["loss_gam"] = self._gam(i_g, t_g, batch.ids, aux, _paired(batch))
        if cfg.hfam and not self.predicting:
            aux["loss_hfam"] = self._hfam(self._levels("image", batch, img_x0, img_outs, img_mask),
                                          self._levels("text", batch, txt_x0, txt_outs, txt_mask), _paired(batch))

        # Stack depth 0: the fusion reads the encoders' own last layer (through the input projections).
        img = img_outs[-1][:, 1:] if img_outs else img_x0
        txt = txt_outs[-1][:, 1:] if txt_outs else txt_x0
        x = torch.cat([img + self.type_emb[0], txt + self.type_emb[1]], dim=1)
        mask = torch.cat([img_mask, txt_mask], dim=1)
        for layer in self.fusion:
            x = layer(x, src_key_padding_mask=~mask)
        f = self.fusion_norm(x)
        g = self.pool(f).squeeze(-1).float().masked_fill(~mask, float("-inf")).softmax(dim=-1)  # [B, P+L]
        pooled = (g.unsqueeze(-1).to(f.dtype) * f).sum(dim=1)
        logits = self.classifier(F.gelu(self.squeeze(pooled)))
        aux["attn_image"], aux["attn_text"] = g[:, : img.shape[1]].detach(), g[:, img.shape[1]:].detach()
        return HeadOutput(logits, aux)

    def explain_weights(self, aux: dict, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fusion attention-pooling weights g (one softmax over patches and tokens), split by modality."""
        return aux["attn_image"], aux["attn_text"]

    def loss(self, out: HeadOutput, batch: Batch, class_weight: torch.Tensor | None = None):
        ce = masked_ce(out.logits, batch.labels, class_weight)
        total, terms = ce, {"ce": float(ce.detach())}
        if "loss_gam" in out.aux:
            total = total + self.cfg.lambda_g * out.aux["loss_gam"]
            terms["gam"] = float(out.aux["loss_gam"].detach())
        if "loss_hfam" in out.aux:
            total = total + self.cfg.lambda_f * out.aux["loss_hfam"]
            terms["hfam"] = float(out.aux["loss_hfam"].detach())
        return total, terms
