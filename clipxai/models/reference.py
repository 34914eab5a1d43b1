"""Independent plain-PyTorch reference of CLIP Surgery, written from the formulas of docs/design.md.

It reads raw tensors from an open_clip CLIP state dict and never calls clipxai's
model code. It follows the reference implementation's structure: both paths in
full through every surgery block (no class-token shortcut), the element-wise
feature-surgery formulation, min-max, reshape, bilinear resize. The oracle that
the tests and the benchmarks (scripts/benchmark*.py) compare clipxai against;
not used by clipxai itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipxai.contract import LOGIT_SCALE


def _ln(x, sd, name):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-5)


def _act(x, quick_gelu):
    return x * torch.sigmoid(1.702 * x) if quick_gelu else F.gelu(x)


def _mlp(x, sd, p, quick_gelu):
    h = F.linear(x, sd[f"{p}.mlp.c_fc.weight"], sd[f"{p}.mlp.c_fc.bias"])
    return F.linear(_act(h, quick_gelu), sd[f"{p}.mlp.c_proj.weight"], sd[f"{p}.mlp.c_proj.bias"])


def _qkv(x, sd, p, heads):
    b, t, c = x.shape
    qkv = F.linear(x, sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"])
    qkv = qkv.reshape(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _attn(q, k, v, sd, p):
    scale = q.shape[-1] ** -0.5
    a = ((q @ k.transpose(-2, -1)) * scale).softmax(-1)
    out = (a @ v).transpose(1, 2)
    out = out.reshape(out.shape[0], out.shape[1], -1)
    return F.linear(out, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])


def _pos_interp(sd, g, mode):
    """Positional embeddings [1+g², C]: patch part resized to g×g with F.interpolate(mode), half-pixel."""
    pos = sd["visual.positional_embedding"]
    c = pos.shape[1]
    g0 = int(round((pos.shape[0] - 1) ** 0.5))
    if g0 == g:
        return pos
    grid = pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(g, g), mode=mode, align_corners=False)
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, c)])


def _embed(sd, image, pos_for_grid):
    """Patch embedding + class token + positional embeddings (pos_for_grid(g)), ln_pre.
    Returns (x [B, 1+N, C], number of blocks)."""
    conv = sd["visual.conv1.weight"]
    x = F.conv2d(image, conv, stride=conv.shape[-1])
    b, c, g, _ = x.shape
    x = x.reshape(b, c, g * g).permute(0, 2, 1)
    x = torch.cat([sd["visual.class_embedding"].expand(b, 1, c), x], 1) + pos_for_grid(g)
    x = _ln(x, sd, "visual.ln_pre")
    return x, len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})


def surgery_tokens(sd, image, heads, surgery_blocks, quick_gelu):
    """image [B,3,S,S] -> [B, 1+N, D] surgery tokens after ln_post and proj."""
    x, layers = _embed(sd, image, lambda g: _pos_interp(sd, g, "bilinear"))
    x_new = None
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}"
        q, k, v = _qkv(_ln(x, sd, f"{p}.ln_1"), sd, p, heads)
        if i >= layers - surgery_blocks:
            if x_new is None:
                x_new = x
            x_new = x_new + _attn(v, v, v, sd, p)
        x = x + _attn(q, k, v, sd, p)
        x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
    tokens = torch.cat([x[:, :1], x_new[:, 1:]], 1)
    return _ln(tokens, sd, "visual.ln_post") @ sd["visual.proj"]


def plain_image_embedding(sd, image, heads, quick_gelu):
    """Plain CLIP image embedding [B, D] (class token of the unmodified model)."""
    return surgery_tokens(sd, image, heads, 1, quick_gelu)[:, 0]


def feature_surgery(feats, text, mode, redundancy=None):
    """Reference formulation, looped per image: feats [B,1+N,D] normalised, text [K,D]."""
    if mode == "empty":
        return feats @ (text - redundancy).t()
    if mode == "none":
        return feats @ text.t()
    out = []
    for f in feats:  # the reference works on one image at a time
        f = f[None]
        prob = (f[:, :1, :] @ text.t() * 2).softmax(-1)
        w = prob / prob.mean(-1, keepdim=True)
        b, n_t, n_i, c = 1, text.shape[0], f.shape[1], f.shape[2]
        el = f.reshape(b, n_i, 1, c) * text.reshape(1, 1, n_t, c)
        el = el * w.reshape(1, 1, n_t, 1)
        el = el - el.mean(2, keepdim=True)
        out.append(el.sum(-1)[0])
    return torch.stack(out)


def heatmaps(sim, size_hw):
    """sim [B, N, K] patch similarity -> [B, K, H, W] min-max maps at size_hw."""
    lo = sim.min(1, keepdim=True)[0]
    hi = sim.max(1, keepdim=True)[0]
    m = (sim - lo) / (hi - lo)
    side = int(round(sim.shape[1] ** 0.5))
    m = m.reshape(m.shape[0], side, side, -1).permute(0, 3, 1, 2)
    return F.interpolate(m, size_hw, mode="bilinear", align_corners=False)


def pipeline(sd, image, text, mode, heads, surgery_blocks, quick_gelu, redundancy=None):
    """Returns similarity [B,N,K], scores [B,K] (CLIP's logit scale, contract.LOGIT_SCALE), grid heatmaps [B,K,g,g]."""
    feats = F.normalize(surgery_tokens(sd, image, heads, surgery_blocks, quick_gelu), dim=-1)
    sim = feature_surgery(feats, text, mode, redundancy)[:, 1:]
    scores = (LOGIT_SCALE * feats[:, 0] @ text.t()).softmax(-1)
    g = int(round(sim.shape[1] ** 0.5))
    return sim, scores, heatmaps(sim, (g, g))


def prompt_ensemble(model, tokenizer, classes, templates):
    """docs/design.md §5 with open_clip's own 77-token encode_text."""
    out = []
    with torch.no_grad():
        for c in classes:
            e = model.encode_text(tokenizer([t.format(c) for t in templates]))
            e = e / e.norm(dim=-1, keepdim=True)
            e = e.mean(0)
            out.append(e / e.norm())
    return torch.stack(out)


def clip_preprocess(pil_image, size, mean, std):
    """torchvision's CLIP preprocessing: squash-resize bicubic, to tensor, normalise -> [3,S,S]."""
    from torchvision import transforms as T
    return T.Compose([T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                      T.Normalize(mean, std)])(pil_image.convert("RGB"))


def similarity_map_to_points(sm, shape, t=0.8, down_sample=2):
    """The reference's point selection: sm [N] min-max map, shape (H, W) -> (points [[x,y]], labels)."""
    import numpy as np
    side = int(sm.shape[0] ** 0.5)
    sm = sm.reshape(1, 1, side, side)
    down_side = side // down_sample
    sm = F.interpolate(sm, (down_side, down_side), mode="bilinear")[0, 0, :, :]
    h, w = sm.shape
    sm = sm.reshape(-1)
    sm = (sm - sm.min()) / (sm.max() - sm.min())
    rank = sm.sort(dim=0, stable=True)[1]
    scale_h = float(shape[0]) / h
    scale_w = float(shape[1]) / w
    num = min(int((sm >= t).sum()), sm.shape[0] // 2)
    labels = np.ones(num * 2).astype("uint8")
    labels[num:] = 0
    points = []
    for idx in list(rank[-num:]) if num else []:
        x = min((idx % w + 0.5) * scale_w, shape[1] - 1)
        y = min((idx // w + 0.5) * scale_h, shape[0] - 1)
        points.append([int(x), int(y)])
    for idx in list(rank[:num]):
        x = min((idx % w + 0.5) * scale_w, shape[1] - 1)
        y = min((idx // w + 0.5) * scale_h, shape[0] - 1)
        points.append([int(x), int(y)])
    return points, labels


def grad_eclip(sd, image, text, heads, quick_gelu):
    """Grad-ECLIP with torch.autograd, one image and one class at a time (issue 8's method).

    Blocks 0..L-2 run plainly (all heads); the last block is rerun with one head
    over the full width, the class token's attention output a is a leaf, and
    dc_k/da comes from torch.autograd.grad. Positional embeddings are resized
    bicubically. Returns (H [B, N, K] before normalisation, heatmaps [B, K, g, g]).
    """
    x, layers = _embed(sd, image, lambda g: _pos_interp(sd, g, "bicubic"))
    b, t, c = x.shape
    g = int(round((t - 1) ** 0.5))
    for i in range(layers - 1):
        p = f"visual.transformer.resblocks.{i}"
        x = x + _attn(*_qkv(_ln(x, sd, f"{p}.ln_1"), sd, p, heads), sd, p)
        x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)

    p = f"visual.transformer.resblocks.{layers - 1}"
    w_o, b_o = sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"]
    maps = []
    for img in range(b):
        xi = x[img]  # [T, C]
        qkv = F.linear(_ln(xi, sd, f"{p}.ln_1"), sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"])
        q, k, v = qkv[:, :c], qkv[:, c:2 * c], qkv[:, 2 * c:]
        a = (((q[0] @ k.t()) / c ** 0.5).softmax(-1) @ v).detach().requires_grad_(True)  # [C]
        z = F.linear(a, w_o, b_o) + xi[0]
        x_out = z + _mlp(_ln(z, sd, f"{p}.ln_2"), sd, p, quick_gelu)
        e = _ln(x_out, sd, "visual.ln_post") @ sd["visual.proj"]
        cos = F.linear(q[0], w_o, b_o)
        lam = F.cosine_similarity(F.linear(k[1:], w_o, b_o), cos[None], dim=-1)  # [N]
        lam = (lam - lam.min()) / (lam.max() - lam.min())
        cols = []
        for t in text:
            c_k = (e @ t) / e.norm()
            grad = torch.autograd.grad(c_k, a, retain_graph=True)[0]
            cols.append(torch.relu((grad[None, :] * v[1:] * lam[:, None]).sum(-1)).detach())
        maps.append(torch.stack(cols, -1))  # [N, K]
    h = torch.stack(maps)
    heat = torch.zeros_like(h)
    for i in range(h.shape[0]):
        for j in range(h.shape[2]):
            col = h[i, :, j]
            if col.max() > col.min():
                heat[i, :, j] = (col - col.min()) / (col.max() - col.min())
    return h, heat.permute(0, 2, 1).reshape(b, -1, g, g)



# --- dense ViT methods (vanilla, MaskCLIP, SCLIP, ClearCLIP, NACLIP), written from the formulas ---

def _pos_resized(sd, g, how):
    """Positional embeddings [1+g², C] as each method's reference resizes them (none at the pretrained grid)."""
    pos = sd["visual.positional_embedding"]
    c = pos.shape[1]
    g0 = int(round((pos.shape[0] - 1) ** 0.5))
    if g == g0:
        return pos
    grid = pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
    if how == "size":  # MaskCLIP (mmseg resize to the target size)
        grid = F.interpolate(grid, size=(g, g), mode="bicubic", align_corners=False)
    else:  # SCLIP / ClearCLIP / NACLIP: by the scale factor (g + 0.1) / g0
        grid = F.interpolate(grid, scale_factor=((g + 0.1) / g0, (g + 0.1) / g0), mode="bicubic")
    assert grid.shape[-1] == g
    return torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, c)])


def _omega(g, sigma=5.0):
    """NACLIP's Ω [1+g², 1+g²], element by element; class token row and column 0."""
    import math
    n = g * g
    rows = [[0.0] * (n + 1)]
    for i in range(n):
        row = [0.0]
        for j in range(n):
            dy, dx = i // g - j // g, i % g - j % g
            row.append(math.exp(-(dy * dy + dx * dx) / (2.0 * sigma * sigma)))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def _weights_times_v(a, v, sd, p):
    out = (a @ v).transpose(1, 2)
    out = out.reshape(out.shape[0], out.shape[1], -1)
    return F.linear(out, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])


def dense_tokens(sd, image, heads, quick_gelu, method):
    """image [B,3,S,S] -> [B, 1+N, D]: the method's last block on every token, then ln_post and proj.

    Token 0 is replaced by the class token of a separate, full run of the plain model.
    """
    x, layers = _embed(sd, image, lambda g: _pos_resized(sd, g, "size" if method == "maskclip" else "scale"))
    b, t, c = x.shape
    g = int(round((t - 1) ** 0.5))
    plain = None
    for i in range(layers):
        p = f"visual.transformer.resblocks.{i}"
        q, k, v = _qkv(_ln(x, sd, f"{p}.ln_1"), sd, p, heads)
        s = q.shape[-1] ** -0.5
        if i < layers - 1 or method == "vanilla":
            x = x + _attn(q, k, v, sd, p)
            x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
            continue
        plain = x + _attn(q, k, v, sd, p)
        plain = plain + _mlp(_ln(plain, sd, f"{p}.ln_2"), sd, p, quick_gelu)
        if method == "maskclip":
            eye = torch.eye(x.shape[1])  # attention that keeps each token's own value
            x = x + _weights_times_v(eye, v, sd, p)
            x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
        elif method == "sclip":
            a = ((q @ q.transpose(-2, -1)) * s).softmax(-1) + ((k @ k.transpose(-2, -1)) * s).softmax(-1)
            x = x + _weights_times_v(a, v, sd, p)
            x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
        elif method == "clearclip":
            x = _weights_times_v(((q @ q.transpose(-2, -1)) * s).softmax(-1), v, sd, p)
        elif method == "naclip":
            x = _weights_times_v(((k @ k.transpose(-2, -1)) * s + _omega(g)).softmax(-1), v, sd, p)
        else:
            raise ValueError(method)
    if plain is not None:
        x = torch.cat([plain[:, :1], x[:, 1:]], 1)
    return _ln(x, sd, "visual.ln_post") @ sd["visual.proj"]


def dense_pipeline(sd, image, text, heads, quick_gelu, method, logit_scale=100.0):
    """Returns similarity [B,N,K] (plain cosine), scores [B,K], grid heatmaps [B,K,g,g]."""
    feats = F.normalize(dense_tokens(sd, image, heads, quick_gelu, method), dim=-1)
    sim = feats[:, 1:] @ text.t()
    scores = (logit_scale * feats[:, 0] @ text.t()).softmax(-1)
    g = int(round(sim.shape[1] ** 0.5))
    return sim, scores, heatmaps(sim, (g, g))


# --- ResNet surgery, written from docs/design.md §3 (ResNet backbones) ---

def _bn(x, sd, name):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=1e-5)


def _bottleneck(x, sd, p, stride):
    out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
    out = F.relu(_bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2"))
    if stride > 1:
        out = F.avg_pool2d(out, stride)
    out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
    identity = x
    if f"{p}.downsample.0.weight" in sd:  # (-1: avgpool, 0: 1x1 conv, 1: BatchNorm)
        identity = F.avg_pool2d(x, stride) if stride > 1 else x
        identity = _bn(F.conv2d(identity, sd[f"{p}.downsample.0.weight"]), sd, f"{p}.downsample.1")
    return F.relu(out + identity)


def resnet_surgery(sd, image, heads):
    """image [B,3,S,S] -> (v-v tokens [B, 1+N, D], plain attention-pool embedding [B, D])."""
    x = F.relu(_bn(F.conv2d(image, sd["visual.conv1.weight"], stride=2, padding=1), sd, "visual.bn1"))
    x = F.relu(_bn(F.conv2d(x, sd["visual.conv2.weight"], padding=1), sd, "visual.bn2"))
    x = F.relu(_bn(F.conv2d(x, sd["visual.conv3.weight"], padding=1), sd, "visual.bn3"))
    x = F.avg_pool2d(x, 2)
    for layer, stride in ((1, 1), (2, 2), (3, 2), (4, 2)):
        n = len({k.split(".")[2] for k in sd if k.startswith(f"visual.layer{layer}.")})
        for i in range(n):
            x = _bottleneck(x, sd, f"visual.layer{layer}.{i}", stride if i == 0 else 1)
    b, c, g, _ = x.shape
    x = x.reshape(b, c, g * g).permute(0, 2, 1)
    x = torch.cat([x.mean(1, keepdim=True), x], 1)
    pos = sd["visual.attnpool.positional_embedding"]
    g0 = int(round((pos.shape[0] - 1) ** 0.5))
    if g0 != g:
        grid = pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, c)])
    x = x + pos

    def lin(t, name):
        return F.linear(t, sd[f"visual.attnpool.{name}.weight"], sd[f"visual.attnpool.{name}.bias"])

    def heads_of(t):
        return t.reshape(b, t.shape[1], heads, c // heads).transpose(1, 2)

    def attn(q, k, v):
        a = ((q @ k.transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
        return lin((a @ v).transpose(1, 2).reshape(b, q.shape[2], c), "c_proj")

    v = heads_of(lin(x, "v_proj"))
    tokens = attn(v, v, v)
    plain = attn(heads_of(lin(x, "q_proj")), heads_of(lin(x, "k_proj")), v)[:, 0]
    return tokens, plain


def resnet_pipeline(sd, image, text, mode, heads, redundancy=None, logit_scale=100.0):
    """Returns similarity [B,N,K], scores [B,K], grid heatmaps [B,K,g,g] of ResNet surgery."""
    tokens, plain = resnet_surgery(sd, image, heads)
    feats = F.normalize(tokens, dim=-1)
    sim = feature_surgery(feats, text, mode, redundancy)[:, 1:]
    scores = (logit_scale * F.normalize(plain, dim=-1) @ text.t()).softmax(-1)
    g = int(round(sim.shape[1] ** 0.5))
    return sim, scores, heatmaps(sim, (g, g))



def slide_inference(run_crop, image, crop, stride):
    """The papers' slide inference (SCLIP/ClearCLIP/NACLIP structure): image [1,3,h,w],
    run_crop(crop [1,3,c,c]) -> patch similarity [1,N,K]. Returns (averaged logits
    [1,K,h,w], per-class min and max [K] over all crops' token grids)."""
    _, _, h_img, w_img = image.shape
    h_grids = max(h_img - crop + stride - 1, 0) // stride + 1
    w_grids = max(w_img - crop + stride - 1, 0) // stride + 1
    preds, count, lo, hi = None, image.new_zeros((1, 1, h_img, w_img)), None, None
    for hi_ in range(h_grids):
        for wi in range(w_grids):
            y1, x1 = hi_ * stride, wi * stride
            y2, x2 = min(y1 + crop, h_img), min(x1 + crop, w_img)
            y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
            sim = run_crop(image[:, :, y1:y2, x1:x2])
            g = int(round(sim.shape[1] ** 0.5))
            lo = sim[0].amin(0) if lo is None else torch.minimum(lo, sim[0].amin(0))
            hi = sim[0].amax(0) if hi is None else torch.maximum(hi, sim[0].amax(0))
            logit = F.interpolate(sim.permute(0, 2, 1).reshape(1, -1, g, g), size=(y2 - y1, x2 - x1),
                                  mode="bilinear", align_corners=False)
            if preds is None:
                preds = image.new_zeros((1, logit.shape[1], h_img, w_img))
            preds += F.pad(logit, (x1, w_img - x2, y1, h_img - y2))
            count[:, :, y1:y2, x1:x2] += 1
    assert (count == 0).sum() == 0
    return preds / count, lo, hi


# --- Grad-ECLIP's text side, as grad_eclip_text.ipynb computes it, with torch.autograd ---

def grad_eclip_text(sd, ids, image_embedding, heads, quick_gelu, n=8, one_pass=False):
    """Word weights for one sentence: ids int64 [77] (open_clip tokens), image embedding [D].

    Blocks 0..L-n-1 run plainly (all heads, causal); the last n are rerun with one
    head over the full width (scale C^-1/2, causal), their attention outputs (before
    out_proj) kept. c = cos(image, text); g_l = autograd.grad(c, a_l)[eot];
    λ_l = min-max over all 77 positions of cos(q_l[eot], k_l[i]) with the raw in_proj q, k;
    E = ReLU(Σ_l Σ_c g_l,c v_l[i,c] λ_l,i), tokens 1..eot-1, divided by their sum.
    one_pass: one backward pass for all blocks (the same numbers, for the benchmark).
    Returns (weights [eot-1], cosine, Σ_l S_l before the ReLU [77]).
    """
    length = ids.shape[0]
    eot = int(ids.argmax())
    mask = torch.full((length, length), float("-inf")).triu(1)
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:length]
    layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    n = min(n, layers)
    c = x.shape[-1]
    for i in range(layers - n):
        p = f"transformer.resblocks.{i}"
        q, k, v = _qkv(_ln(x, sd, f"{p}.ln_1")[None], sd, p, heads)
        w = (q @ k.transpose(-2, -1) * (c // heads) ** -0.5 + mask).softmax(-1)
        out = (w @ v).transpose(1, 2).reshape(1, length, c)[0]
        x = x + F.linear(out, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])
        x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
    qs, ks, vs, outs = [], [], [], []
    x = x.detach().requires_grad_(True)  # so that the attention outputs below take part in autograd
    for i in range(layers - n, layers):
        p = f"transformer.resblocks.{i}"
        qkv = F.linear(_ln(x, sd, f"{p}.ln_1"), sd[f"{p}.attn.in_proj_weight"], sd[f"{p}.attn.in_proj_bias"])
        q, k, v = qkv.chunk(3, dim=-1)
        a = (q @ k.t() * c ** -0.5 + mask).softmax(-1) @ v
        qs.append(q), ks.append(k), vs.append(v), outs.append(a)
        x = x + F.linear(a, sd[f"{p}.attn.out_proj.weight"], sd[f"{p}.attn.out_proj.bias"])
        x = x + _mlp(_ln(x, sd, f"{p}.ln_2"), sd, p, quick_gelu)
    t = _ln(x, sd, "ln_final")[eot] @ sd["text_projection"]
    cosine = F.normalize(image_embedding, dim=-1) @ F.normalize(t, dim=-1)
    total = torch.zeros(length)
    # the notebook asks autograd once per block; one_pass asks for all blocks in one backward pass
    grads = torch.autograd.grad(cosine, outs) if one_pass else [None] * len(outs)
    for q, k, v, a, g in zip(qs, ks, vs, outs, grads):
        g = (g if one_pass else torch.autograd.grad(cosine, a, retain_graph=True)[0])[eot]
        lam = F.cosine_similarity(q[eot][None], k, dim=-1)
        lam = (lam - lam.min()) / (lam.max() - lam.min())
        total = total + (g[None] * v * lam[:, None]).sum(-1)
    e = torch.relu(total)[1:eot]
    return (e / e.sum()).detach(), float(cosine.detach()), total.detach()
