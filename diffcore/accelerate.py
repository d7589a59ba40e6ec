"""diffcore.accelerate: drop-in acceleration of an existing U-Net, in place.

    model = diffcore.accelerate(model)                      # the same object, fused ops inside
    model, report = diffcore.accelerate(model, report=True)  # and what was swapped, and why
    print(report)

It walks any nn.Module and swaps in diffcore's fused operations (diffcore.ops through the
modules of diffcore.nn), keeping every parameter, buffer, module name and state_dict key, so
weights load into the accelerated model and out of it unchanged:

* GroupNorm -> SiLU pairs: in an nn.Sequential (guided-diffusion's `in_layers` /
  `out_layers`), and diffusers' U-Nets' `conv_norm_out` + `conv_act`. The GroupNorm becomes a
  diffcore.nn.GroupNormSiLU holding the same weight and bias Parameters, the SiLU an
  nn.Identity (neither has parameters, so the keys do not change).
* diffusers' ResnetBlock2D (time_embedding_norm "default", SiLU): norm1 + SiLU fused; the
  timestep-embedding add fused into norm2 + SiLU (the embedding is added per channel before
  the statistics, exactly as the block does); residual add and 1/output_scale_factor fused.
  "scale_shift" blocks keep norm2 as a GroupNorm (the scale and shift come between the norm
  and the SiLU, so there is no GroupNorm -> SiLU pair) but get norm1 and the residual fused.
* guided-diffusion-style ResBlocks (in_layers, emb_layers, out_layers, skip_connection): the
  two Sequential pairs fused, the embedding add fused into out_layers' norm, the residual
  fused. With use_scale_shift_norm only in_layers is fused (out_layers[0] is called on its
  own there, so its SiLU must stay).
* diffusers' Attention with a group norm (UNet2DModel's attention blocks) gets a processor
  (FusedAttnProcessor) that normalises the [B, C, H, W] tensor through diffcore.ops
  (silu=False), gives the projections a contiguous token-major copy (none with channels_last
  input) and adds the residual in place to the output projection's result, in the layout
  AttnProcessor2_0 leaves it (channels_last strides). Calls it does not cover
  (cross-attention, masks, 3-D input, ...) go to the original processor.
* diffcore's own modules (diffcore.models.UNet's ResBlock, AttnBlock, GroupNormSiLU) are
  already fused: reported as such (with `backend=` their GroupNormSiLU modules are pinned to it).

Blocks are accelerated by swapping the instance's class for a subclass whose forward calls
the fused ops (`isinstance` checks still hold); children are never re-created.

* 3x3 convolutions (plain nn.Conv2d, stride 1, padding 1, one group, at least 16 channels in
  and out) become diffcore.winograd.WinogradConv2d (a class swap): in float32 CPU inference on
  channels_last input they run Winograd's F(4x4, 3x3) or, with few tiles, F(2x2, 3x3) on the
  native extension (see diffcore.winograd for the choice, the speed and the rounding), in bf16
  too where oneDNN has no bf16 convolutions (see diffcore.precision); every other call is
  nn.Conv2d's own forward. Not with backend="torch" or "triton" (the op is native only).
  Weight changes are followed (see diffcore.winograd._transformed); after a partial write
  through `.data` outside diffcore.sample, call diffcore.winograd.revalidate(). Each layer's
  transformed weight (4x its float32 size for F(4x4)) is cached on its first call, all of them
  within diffcore.winograd.cache_limit_mb() (default: a quarter of the machine's memory;
  DIFFCORE_WINOGRAD_CACHE_MB): layers past it run oneDNN's convolution, with one warning.

Everything else is left as it is: GroupNorm without a following SiLU outside those attention
blocks (e.g. Transformer2DModel's input norm: a plain GroupNorm, which the fused op does not
beat on CPU), diffusers' ResnetBlockCondNorm2D, activations other than SiLU, subclasses with
their own forward. The report says so, block by block. A guided-diffusion-style block is
recognised by its attributes (in_layers, emb_layers ending in a Linear, out_layers starting
with a GroupNorm, skip_connection) and assumed to have guided-diffusion's ResBlock forward.

backend: None uses diffcore.ops' choice per call (DIFFCORE_BACKEND or the fastest present);
a name ("torch", "native", "triton") pins every fused op of the swapped modules to it.
With backend=None, a residual add that needs no gradient, in float32 or float64, is done in
place on the branch's fresh output (`h.add_(skip)`, then `mul_(scale)` if scale != 1): the same
arithmetic as the op's reference, with no new tensor (allocation is most of its cost on CPU).
Otherwise the residual goes through diffcore.ops.residual_add.

Speed on CPU: convolutions are most of a U-Net's time and run faster on channels_last
tensors with channels_last weights; `model.to(memory_format=torch.channels_last)` (before or
after accelerate) and channels_last inputs give the fastest configuration.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import nn as dnn
from . import onednn_linear, ops, precision, winograd

__all__ = ["accelerate", "Report", "Entry"]


# ---- the report ------------------------------------------------------------------------------
@dataclasses.dataclass
class Entry:
    name: str        # the module's qualified name ("" for the root)
    kind: str        # its class name
    action: str      # "fused", "partly fused", "swapped", "left", "already fused"
    detail: str      # what was fused, or why not

    def __str__(self):
        name = self.name or "(root)"
        if self.action == "left":
            return f"{name}: {self.kind}, left: {self.detail}"
        return f"{name}: {self.kind} -> {self.action} ({self.detail})"


class Report(list):
    """The list of Entry, in module order; str() gives one line each, then a summary."""

    def swapped(self) -> list[Entry]:
        return [e for e in self if e.action in ("fused", "partly fused", "swapped")]

    def left(self) -> list[Entry]:
        return [e for e in self if e.action == "left"]

    def __str__(self):
        lines = [str(e) for e in self]
        n_fused = len(self.swapped())
        n_already = sum(e.action == "already fused" for e in self)
        lines.append(f"{n_fused} swapped, {len(self.left())} left, {n_already} already fused")
        return "\n".join(lines)


# ---- what counts as a GroupNorm and a SiLU ---------------------------------------------------
def _plain_group_norm(m) -> bool:
    """nn.GroupNorm, or a subclass whose forward the fused op reproduces: GroupNorm's own, or
    guided-diffusion's GroupNorm32 (normalise in float32, cast back: what the op does)."""
    if not isinstance(m, nn.GroupNorm) or isinstance(m, dnn.GroupNormSiLU):
        return False
    return type(m).forward is nn.GroupNorm.forward or type(m).__name__ == "GroupNorm32"


def _is_silu(m) -> bool:
    """nn.SiLU, or a parameterless module named SiLU/Swish (guided-diffusion's and old diffusers')."""
    if isinstance(m, nn.SiLU):
        return True
    return (type(m).__name__ in ("SiLU", "Swish") and not list(m.parameters(recurse=True))
            and not list(m.children()))


def _fused_norm(gn: nn.GroupNorm, silu: bool, backend) -> dnn.GroupNormSiLU:
    """A GroupNormSiLU holding gn's own weight and bias Parameters (same keys, same objects)."""
    f = dnn.GroupNormSiLU.__new__(dnn.GroupNormSiLU)
    nn.Module.__init__(f)
    f.num_groups, f.num_channels, f.eps, f.affine, f.silu = gn.num_groups, gn.num_channels, gn.eps, gn.affine, silu
    if gn.affine:
        f.weight, f.bias = gn.weight, gn.bias
    else:
        f.register_parameter("weight", None)
        f.register_parameter("bias", None)
    f.training = gn.training
    if backend is not None:
        f.backend = backend
    return f


def _residual(skip: torch.Tensor, h: torch.Tensor, scale: float, backend) -> torch.Tensor:
    """(skip + h) * scale in h's memory format; h must be a tensor the caller owns (a layer's
    fresh output, possibly viewed with other strides). Mixed dtypes (autocast) are promoted as
    torch's `skip + h` in the original block would: the residual stream keeps its precision."""
    if skip.dtype != h.dtype:
        dt = torch.promote_types(skip.dtype, h.dtype)
        skip, h = skip.to(dt), h.to(dt)
    if (backend is None and h.dtype in (torch.float32, torch.float64) and skip.shape == h.shape
            and not (torch.is_grad_enabled() and (h.requires_grad or skip.requires_grad))):
        h = h.add_(skip)  # the reference's float32 (float64) arithmetic, without a new tensor
        return h if scale == 1.0 else h.mul_(scale)
    return ops.residual_add(skip, h, scale, backend=backend)


# ---- accelerated blocks: subclasses whose forward calls the fused ops -------------------------
_DERIVED: dict[tuple[type, type], type] = {}


def _derive(mixin: type, base: type) -> type:
    """The subclass (mixin, base), made once per pair; named Fused<Base> and registered in this
    module under that name (first come), so pickling an accelerated module finds it."""
    key = (mixin, base)
    if key not in _DERIVED:
        name = f"Fused{base.__name__}"
        _DERIVED[key] = cls = type(name, (mixin, base), {"__module__": __name__, "__qualname__": name})
        globals().setdefault(name, cls)
    return _DERIVED[key]


def __getattr__(name: str):
    # unpickling in a fresh process: diffusers' ResnetBlock2D's accelerated class on demand
    if name == "FusedResnetBlock2D":
        from diffusers.models.resnet import ResnetBlock2D
        return _derive(_FusedDiffusersResnet, ResnetBlock2D)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _accelerated(m) -> bool:
    return isinstance(m, (_FusedDiffusersResnet, _FusedGuidedResBlock))


class _FusedDiffusersResnet:
    """diffusers.models.resnet.ResnetBlock2D.forward with norm1 + SiLU, the embedding add +
    norm2 + SiLU (time_embedding_norm "default") and the residual epilogue fused.
    norm1 (and norm2 in "default" mode) are GroupNormSiLU modules here."""

    _diffcore_backend = None

    def forward(self, input_tensor, temb, *args, **kwargs):
        x = input_tensor
        h = self.norm1(x)                              # GroupNorm + SiLU in one pass
        if self.upsample is not None:
            if h.shape[0] >= 64:                       # as diffusers: upsample_nearest_nhwc and big batches
                x, h = x.contiguous(), h.contiguous()
            x, h = self.upsample(x), self.upsample(h)
        elif self.downsample is not None:
            x, h = self.downsample(x), self.downsample(h)
        h = self.conv1(h)
        if self.time_emb_proj is not None and temb is not None:
            if not self.skip_time_act:
                temb = self.nonlinearity(temb)
            temb = self.time_emb_proj(temb)
        if self.time_embedding_norm == "default":
            emb = None
            if temb is not None:
                if temb.dim() == 2 and temb.shape[1] == h.shape[1]:
                    emb = temb.to(h.dtype).expand(h.shape[0], -1)
                else:                                  # an unprojected embedding of another shape: as diffusers
                    h = h + (temb if temb.dim() == h.dim() else temb[:, :, None, None])
            h = self.norm2(h, emb=emb)                 # (h + emb) -> GroupNorm -> SiLU in one pass
        else:                                          # scale_shift: norm, then scale/shift, then SiLU
            if temb is None:
                raise ValueError(f" `temb` should not be None when `time_embedding_norm` is {self.time_embedding_norm}")
            scale, shift = torch.chunk(temb[:, :, None, None], 2, dim=1)
            h = self.nonlinearity(self.norm2(h) * (1 + scale) + shift)
        h = self.dropout(h)
        h = self.conv2(h)
        if self.conv_shortcut is not None:
            if self.training:
                x = x.contiguous()
            x = self.conv_shortcut(x)
        return _residual(x, h, 1.0 / self.output_scale_factor, self._diffcore_backend)


class _FusedGuidedResBlock:
    """A guided-diffusion ResBlock's forward with the embedding add fused into out_layers'
    GroupNorm + SiLU (out_layers = [GroupNormSiLU, Identity, *rest]) and the residual fused."""

    _diffcore_backend = None

    def forward(self, x, emb):
        if getattr(self, "updown", False):
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_rest(x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = in_conv(h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)
        emb_out = emb_out.reshape(emb_out.shape[0], emb_out.shape[1]).expand(h.shape[0], -1)
        h = self.out_layers[0](h, emb=emb_out)         # (h + emb) -> GroupNorm -> SiLU in one pass
        h = self.out_layers[2:](h)
        return _residual(self.skip_connection(x), h, 1.0, self._diffcore_backend)


def _swap_class(m: nn.Module, mixin: type, backend) -> None:
    m.__class__ = _derive(mixin, type(m))
    if backend is not None:
        m._diffcore_backend = backend


# ---- diffusers Attention (4-D input, self-attention, group norm) -----------------------------
def _plain_linear(lin) -> bool:
    return type(lin) is nn.Linear and not lin._forward_hooks and not lin._forward_pre_hooks


def _project(lin, x):
    """lin(x) for an attention projection: a plain nn.Linear runs as onednn_linear.linear
    (oneDNN's matmul in float32 CPU inference, F.linear otherwise); subclasses and hooked
    modules are called as modules."""
    return onednn_linear.linear(x, lin.weight, lin.bias) if _plain_linear(lin) else lin(x)


def _qkv(attn, tokens):
    """The three projections of the tokens. Under CPU bf16 emulation (autocast to bf16 where
    oneDNN has no bf16) the tokens are widened to float32 once for all three, where each
    widened linear of precision.autocast would widen them again (the same numbers; under plain
    torch.autocast, whose bf16 matmul is the slow reference kernel, the same bf16 values with
    float32 accumulation)."""
    lins = (attn.to_q, attn.to_k, attn.to_v)
    if (tokens.dtype == torch.bfloat16 and tokens.device.type == "cpu" and precision.cpu_bf16_emulated()
            and all(_plain_linear(lin) and lin.weight.dtype in (torch.float32, torch.bfloat16) for lin in lins)):
        wide = tokens.float()
        return tuple(precision.linear_on_bf16_values(wide, lin.weight, lin.bias) for lin in lins)
    return tuple(_project(lin, tokens) for lin in lins)


class FusedAttnProcessor:
    """Self-attention of diffusers' Attention on [B, C, H, W] input with fewer passes over
    memory than AttnProcessor2_0: the group norm runs on the 4-D tensor (diffcore.ops, no
    SiLU); the projections get one contiguous token-major [B, HW, C] copy (a free view with
    channels_last input), which their GEMMs read faster than the transposed view; the residual
    is added in place to the output projection's fresh [B, HW, C] result, viewed as [B, C, H, W]
    (AttnProcessor2_0: an add and a division, each a new tensor). The output has channels_last
    strides whatever the input's, as AttnProcessor2_0's does (its reshape of the transposed
    projection is that view), so the layers after it see the layout they see in the original.
    The projections are the block's own modules (a plain nn.Linear in CPU float32 inference
    runs as oneDNN's matmul; see _project and _qkv). Calls it does not cover
    (cross-attention, masks, 3-D input, extra arguments) go to the processor it replaced
    (`fallback`)."""

    def __init__(self, fallback, backend=None):
        self.fallback = fallback
        self.backend = backend

    @staticmethod
    def _covers(attn, hidden_states, encoder_hidden_states, attention_mask, args, kwargs) -> bool:
        return (hidden_states.dim() == 4 and encoder_hidden_states is None and attention_mask is None
                and not args and not kwargs and attn.spatial_norm is None and attn.norm_q is None
                and attn.norm_k is None and not attn.is_cross_attention and attn.residual_connection
                and not getattr(attn, "fused_projections", False))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if not self._covers(attn, hidden_states, encoder_hidden_states, attention_mask, args, kwargs):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        x = hidden_states
        B, C, H, W = x.shape
        gn = attn.group_norm
        h = ops.group_norm_silu(x, gn.num_groups, gn.weight, gn.bias, gn.eps, silu=False, backend=self.backend)
        channels_last = h.dim() == 4 and not h.is_contiguous() and h.is_contiguous(memory_format=torch.channels_last)
        if channels_last:
            tokens = h.permute(0, 2, 3, 1).reshape(B, H * W, C)          # a view
        else:
            tokens = h.reshape(B, C, H * W).transpose(1, 2).contiguous()  # the one copy
        q, k, v = _qkv(attn, tokens)
        heads = attn.heads
        d = k.shape[-1] // heads
        q, k, v = (y.view(B, -1, heads, d).transpose(1, 2) for y in (q, k, v))
        # the default scale 1/sqrt(d), as AttnProcessor2_0 (which does not pass attn.scale)
        o = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
        o = o.transpose(1, 2).reshape(B, -1, heads * d).to(q.dtype)       # a view when heads == 1
        out = attn.to_out[1](_project(attn.to_out[0], o))                 # [B, HW, C]
        out = out.view(B, H, W, C).permute(0, 3, 1, 2)                     # [B, C, H, W] as strides
        return _residual(x, out, 1.0 / attn.rescale_output_factor, self.backend)


# ---- the walk --------------------------------------------------------------------------------
def _diffusers_class(m, name: str) -> bool:
    """Whether m is an instance of a diffusers class of that name (no import of diffusers)."""
    return any(c.__name__ == name and c.__module__.startswith("diffusers.") for c in type(m).__mro__)


def _diffusers_forward(m, name: str) -> bool:
    """Whether m's forward is that diffusers class's own (not a subclass's override)."""
    for c in type(m).__mro__:
        if "forward" in c.__dict__:
            return c.__name__ == name and c.__module__.startswith("diffusers.")
    return False


def _diffcore_fused(m) -> bool:
    from .models import unet as _unet
    return isinstance(m, (dnn.GroupNormSiLU, _unet.ResBlock, _unet.AttnBlock))


class _Walker:
    def __init__(self, backend):
        self.backend = backend
        self.report = Report()
        self.seen: set[int] = set()

    def add(self, name, m, action, detail):
        self.report.append(Entry(name, type(m).__name__, action, detail))

    def walk(self, m: nn.Module, name: str) -> None:
        if id(m) in self.seen:  # a shared submodule is accelerated once
            return
        self.seen.add(id(m))
        if _accelerated(m) or isinstance(getattr(m, "processor", None), FusedAttnProcessor):
            self.add(name, m, "already fused", "accelerated before")
            return
        if _diffcore_fused(m):
            self._diffcore(m, name)
            return
        if _diffusers_class(m, "ResnetBlock2D"):
            if _diffusers_forward(m, "ResnetBlock2D"):
                self._diffusers_resnet(m, name)
            else:
                self.add(name, m, "left", "a ResnetBlock2D subclass with its own forward")
                self._children(m, name)
            return
        if _diffusers_class(m, "ResnetBlockCondNorm2D"):
            self.add(name, m, "left", "conditional normalisation (AdaGroupNorm/SpatialNorm) is not a "
                                      "GroupNorm -> SiLU pair")
            self._children(m, name, skip=("norm1", "norm2"))
            return
        if _diffusers_class(m, "Attention"):
            self._diffusers_attention(m, name)
            return
        if self._is_guided_resblock(m):
            self._guided_resblock(m, name)
            return
        if _diffusers_class(m, "UNet2DModel") or _diffusers_class(m, "UNet2DConditionModel"):
            self._pair_attrs(m, name, "conv_norm_out", "conv_act")
        if isinstance(m, nn.Sequential):
            self._sequential(m, name)
        self._children(m, name)

    def _children(self, m, name, skip=()):
        for child_name, child in m.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if child_name in skip:
                self.seen.add(id(child))
                continue
            if _plain_group_norm(child):
                if id(child) not in self.seen:
                    self.seen.add(id(child))
                    self.add(full, child, "left", "GroupNorm without SiLU after it: nothing to fuse")
                continue
            if isinstance(child, nn.GroupNorm) and not isinstance(child, dnn.GroupNormSiLU):
                self.seen.add(id(child))
                self.add(full, child, "left", f"GroupNorm subclass {type(child).__name__} with its own forward")
                continue
            self.walk(child, full)

    # -- diffcore's own modules
    def _diffcore(self, m, name):
        n = 0
        for sub in m.modules():
            self.seen.add(id(sub))
            if isinstance(sub, dnn.GroupNormSiLU):
                n += 1
                if self.backend is not None:
                    sub.backend = self.backend
        what = {"GroupNormSiLU": "diffcore.nn.GroupNormSiLU"}.get(type(m).__name__, f"diffcore {type(m).__name__}")
        self.add(name, m, "already fused", f"{what}: built from diffcore.nn ({n} GroupNormSiLU)")

    # -- 3x3 convolutions (a pass of their own: the block walks above do not enter every layer)
    def convolutions(self, root: nn.Module) -> None:
        for name, m in root.named_modules():
            if isinstance(m, winograd.WinogradConv2d):
                self.add(name, m, "already fused", "Winograd 3x3 convolution: accelerated before")
            elif isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (3, 3):
                why = winograd.why_not(m)
                if why is None and not winograd._native_loaded():
                    why = "the native extension (diffcore.native) did not load: no Winograd op here"
                if why is not None:
                    self.add(name, m, "left", why)
                    continue
                self.add(name, m, "swapped", "WinogradConv2d: F(4x4, 3x3) or F(2x2, 3x3) in float32 (and "
                                             "bf16 without oneDNN bf16) CPU inference on channels_last input")
                m.__class__ = winograd.WinogradConv2d

    # -- GroupNorm -> SiLU pairs
    def _sequential(self, seq: nn.Sequential, name):
        keys = list(seq._modules)
        i = 0
        while i + 1 < len(keys):
            a, b = seq._modules[keys[i]], seq._modules[keys[i + 1]]
            if _plain_group_norm(a) and _is_silu(b) and id(a) not in self.seen:
                self._fuse_pair(seq, name, keys[i], keys[i + 1])
                i += 2
            else:
                i += 1

    def _pair_attrs(self, m, name, norm_attr, act_attr):
        gn, act = getattr(m, norm_attr, None), getattr(m, act_attr, None)
        if gn is not None and _plain_group_norm(gn) and _is_silu(act) and id(gn) not in self.seen:
            self._fuse_pair(m, name, norm_attr, act_attr)

    def _fuse_pair(self, parent, name, norm_key, act_key):
        gn = parent._modules[norm_key]
        full = f"{name}.{norm_key}" if name else norm_key
        parent._modules[norm_key] = f = _fused_norm(gn, True, self.backend)
        parent._modules[act_key] = nn.Identity()
        self.seen.update((id(gn), id(f), id(parent._modules[act_key])))
        act_name = f"{name}.{act_key}" if name else act_key
        self.add(full, gn, "fused", f"GroupNorm + SiLU -> GroupNormSiLU; the SiLU {act_name} -> Identity")

    # -- diffusers ResnetBlock2D
    def _diffusers_resnet(self, m, name):
        for sub in m.modules():
            self.seen.add(id(sub))
        why_not = None
        if not _is_silu(m.nonlinearity):
            why_not = f"nonlinearity is {type(m.nonlinearity).__name__}, not SiLU"
        elif not (_plain_group_norm(m.norm1) and _plain_group_norm(m.norm2)):
            why_not = f"norms are {type(m.norm1).__name__}/{type(m.norm2).__name__}, not plain GroupNorm"
        elif m.time_embedding_norm not in ("default", "scale_shift"):
            why_not = f"time_embedding_norm={m.time_embedding_norm!r}"
        if why_not is not None:
            self.add(name, m, "left", why_not)
            return
        m.norm1 = _fused_norm(m.norm1, True, self.backend)
        parts = ["norm1+SiLU"]
        if m.time_embedding_norm == "default":
            m.norm2 = _fused_norm(m.norm2, True, self.backend)
            parts.append("temb+norm2+SiLU" if m.time_emb_proj is not None else "norm2+SiLU")
            action = "fused"
        else:
            parts.append("norm2 left: scale_shift applies (1 + scale) * norm2 + shift between the norm "
                         "and the SiLU")
            action = "partly fused"
        osf = m.output_scale_factor
        parts.append("residual" + ("" if osf == 1 else f" * 1/{osf:g}"))
        if m.upsample is not None or m.downsample is not None:
            parts.append(("up" if m.upsample is not None else "down") + "sampling kept between norm1 and conv1")
        self.add(name, m, action, ", ".join(parts))
        _swap_class(m, _FusedDiffusersResnet, self.backend)

    # -- diffusers Attention
    def _diffusers_attention(self, m, name):
        proc = getattr(m, "processor", None)
        pname = type(proc).__name__
        why = None
        if m.group_norm is None:
            why = "no group norm (transformer attention on [B, HW, C]): nothing to fuse"
        elif not _diffusers_forward(m, "Attention"):
            why = "an Attention subclass with its own forward"
        elif pname != "AttnProcessor2_0":
            why = f"processor {pname}, not AttnProcessor2_0"
        elif m.spatial_norm is not None or m.norm_q is not None or m.norm_k is not None:
            why = "spatial norm or q/k norms"
        elif m.is_cross_attention or not m.residual_connection:
            why = "cross-attention or no residual connection"
        if why is not None:
            self.add(name, m, "left", why)
            self._children(m, name)
            return
        if m.group_norm is not None:
            self.seen.add(id(m.group_norm))
        m.set_processor(FusedAttnProcessor(proc, self.backend))
        self.add(name, m, "fused", "group_norm on [B, C, H, W], q/k/v/out as batched GEMMs without "
                                   f"transposed copies, residual; other calls: the original {pname}")
        self._children(m, name, skip=("group_norm",))

    # -- guided-diffusion ResBlock
    @staticmethod
    def _is_guided_resblock(m) -> bool:
        seqs = [getattr(m, a, None) for a in ("in_layers", "emb_layers", "out_layers")]
        if not (all(isinstance(s, nn.Sequential) for s in seqs) and isinstance(getattr(m, "skip_connection", None),
                                                                             nn.Module) and len(seqs[2]) >= 3):
            return False
        lin = seqs[1][-1]   # the embedding projection: C (or 2C with scale-shift) outputs
        norm = seqs[2][0]
        return (isinstance(lin, nn.Linear) and isinstance(norm, nn.GroupNorm)
                and lin.out_features in (norm.num_channels, 2 * norm.num_channels))

    def _guided_resblock(self, m, name):
        scale_shift = bool(getattr(m, "use_scale_shift_norm", False))
        out = m.out_layers
        self._sequential(m.in_layers, f"{name}.in_layers")
        pair_out = _plain_group_norm(out[0]) and _is_silu(out[1])
        if scale_shift or not pair_out:
            if scale_shift and _plain_group_norm(out[0]):
                self.seen.add(id(out[0]))
                self.add(f"{name}.out_layers.0", out[0], "left",
                         "use_scale_shift_norm: the block calls out_layers[0] alone and scales/shifts "
                         "before the SiLU")
            self._children(m, name)
            self.add(name, m, "left", "block forward kept: " + ("use_scale_shift_norm" if scale_shift else
                                                                 "out_layers does not start with GroupNorm -> SiLU")
                     + ("; its in_layers' GroupNorm -> SiLU is fused" if any(
                         isinstance(c, dnn.GroupNormSiLU) for c in m.in_layers) else ""))
            return
        out._modules[list(out._modules)[0]] = f = _fused_norm(out[0], True, self.backend)
        out._modules[list(out._modules)[1]] = nn.Identity()
        self.seen.update((id(f), id(out[1])))
        self.add(name, m, "fused", "in_layers GroupNorm+SiLU, emb add+out_layers GroupNorm+SiLU, residual")
        _swap_class(m, _FusedGuidedResBlock, self.backend)
        self._children(m, name)


def accelerate(module: nn.Module, report: bool = False, backend: str | None = None):
    """Swap diffcore's fused ops into `module` in place (see the module docstring).

    Returns the module itself, or (module, Report) with report=True: one Entry per block
    that was swapped, left (with the reason) or found already fused; print(report) lists them.
    Calling it again on an accelerated module changes nothing (entries say "already fused").
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module; got {type(module).__name__}")
    if backend is not None:
        from .validation import check_choice
        check_choice("backend", backend, ops.BACKENDS + ("auto",))
        if backend == "auto":
            backend = None
    w = _Walker(backend)
    w.walk(module, "")
    if backend in (None, "native"):   # the Winograd convolution is a native op
        w.convolutions(module)
    return (module, w.report) if report else module
