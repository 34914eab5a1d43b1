"""Independent plain-PyTorch reference of CLIP Surgery, written from DESIGN's formulas.

It reads raw tensors from an open_clip CLIP state dict and never calls clipxai's
model code. It follows the reference implementation's structure: both paths in
full through every surgery block (no class-token shortcut), the element-wise
feature-surgery formulation, min-max, reshape, bilinear resize.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def surgery_tokens(sd, image, heads, surgery_blocks, quick_gelu):
    """image [B,3,S,S] -> [B, 1+N, D] surgery tokens after ln_post and proj."""
    conv = sd["visual.conv1.weight"]
    patch = conv.shape[-1]
    x = F.conv2d(image, conv, stride=patch)
    b, c, g, _ = x.shape
    x = x.reshape(b, c, g * g).permute(0, 2, 1)
    pos = sd["visual.positional_embedding"]
    g0 = int(round((pos.shape[0] - 1) ** 0.5))
    if g0 != g:
        grid = pos[1:].reshape(1, g0, g0, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(g, g), mode="bilinear", align_corners=False)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(g * g, c)])
    x = torch.cat([sd["visual.class_embedding"].expand(b, 1, c), x], 1) + pos
    x = _ln(x, sd, "visual.ln_pre")
    layers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
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


def pipeline(sd, image, text, mode, heads, surgery_blocks, quick_gelu, redundancy=None, logit_scale=100.0):
    """Returns similarity [B,N,K], scores [B,K], grid heatmaps [B,K,g,g]."""
    feats = F.normalize(surgery_tokens(sd, image, heads, surgery_blocks, quick_gelu), dim=-1)
    sim = feature_surgery(feats, text, mode, redundancy)[:, 1:]
    scores = (logit_scale * feats[:, 0] @ text.t()).softmax(-1)
    g = int(round(sim.shape[1] ** 0.5))
    return sim, scores, heatmaps(sim, (g, g))


def prompt_ensemble(model, tokenizer, classes, templates):
    """DESIGN section 5 with open_clip's own 77-token encode_text."""
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
