"""Feature families, placement regions and intensity bounds of the FNAF attack.

A batch of candidate features for N images is a pair of tensors, the compact form
the ``fastfn.ops`` feature kernels take:

- ``index`` (N, R, P) int64: flat pixel indices ``row * w + col`` into the (h, w)
  target, -1 padding (a feature has at most P pixels, each at most once);
- ``values`` (N, R, P) float32: the intensity added at each pixel (0 at padding).

Everything is drawn on the targets' device from a ``torch.Generator`` (no numpy,
no per-sample Python loops), so a seed reproduces a batch of features.

Families (``size`` = (min, max), drawn uniformly per feature, in the family's unit):

- ``random_walk``: the authors' 4-connected random walk of ``size`` steps
  (10 at evaluation in their code); revisited pixels count once.
- ``ellipse``: a filled ellipse of semi-axes ``size`` pixels (each drawn
  independently, so ``size=(r, r)`` gives a disk), random orientation.
- ``line``: a thin tear-like segment, length ``size`` pixels, width
  ``line_width`` pixels, random angle.
- ``gaussian``: a blob with standard deviation ``size / 2`` pixels (drawn
  continuously), support out to 2 sigma, intensities ``amplitude * exp(-r^2/2s^2)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastfn.configs import check_choice

FAMILIES = ("random_walk", "ellipse", "line", "gaussian")
PLACEMENTS = ("anatomy", "box")
INTENSITY_MODES = ("image", "local", "fixed")
FIELD_CHOICES = {"family": FAMILIES, "intensity_mode": INTENSITY_MODES, "placement": PLACEMENTS}


@dataclass
class FeatureConfig:
    """What a feature may be (the allowed set D of docs/METHOD.md section 5).

    Attributes:
        family: feature family: random_walk, ellipse, line or gaussian (fastfn.attack.features).
        size: (min, max) size in the family's unit (random-walk steps, semi-axes or lengths in
            pixels), drawn uniformly per feature; 0 < min <= max.
        line_width: width of ``line`` features in pixels.
        intensity_mode: how ``intensity`` is read: "image" - fractions of the image's [min, max]
            (the authors: (0, 1)); "local" - fractions of the mean target intensity under the
            feature's support (contrast against the local tissue); "fixed" - absolute values.
        intensity: (lo, hi) intensity bounds as read by ``intensity_mode``; lo <= hi.
        placement: where feature centres may lie: "anatomy" - inside the foreground (target
            and its 5x5 mean above ``foreground`` times the image max) and at least ``margin``
            pixels from the border; "box" - the authors' fixed box, pixels [50, 270) of a 320
            crop, scaled to the crop size.
        margin: border margin in pixels of the "anatomy" placement.
        foreground: foreground threshold of the "anatomy" placement, a fraction of the image max.
        ring: loss region T = the feature's support dilated by ``ring`` 4-neighbour steps.
    """
    family: str = field(default="random_walk", metadata={"choices": FAMILIES})
    size: tuple[float, float] = (10.0, 10.0)
    line_width: int = 1
    intensity_mode: str = field(default="image", metadata={"choices": INTENSITY_MODES})
    intensity: tuple[float, float] = (0.0, 1.0)
    placement: str = field(default="anatomy", metadata={"choices": PLACEMENTS})
    margin: int = 8
    foreground: float = 0.1
    ring: int = 1

    def __post_init__(self) -> None:
        if len(self.size) != 2 or len(self.intensity) != 2:
            raise ValueError(f"FeatureConfig: size and intensity must be (min, max) pairs, got "
                             f"size={self.size}, intensity={self.intensity}")
        self.size = (float(self.size[0]), float(self.size[1]))
        self.intensity = (float(self.intensity[0]), float(self.intensity[1]))
        for name in ("family", "intensity_mode", "placement"):
            check_choice("FeatureConfig", name, getattr(self, name), FIELD_CHOICES[name])
        if not 0 < self.size[0] <= self.size[1]:
            raise ValueError(f"FeatureConfig.size must be (min, max) with 0 < min <= max, got {self.size}")
        if self.intensity[0] > self.intensity[1]:
            raise ValueError(f"FeatureConfig.intensity must be (lo, hi) with lo <= hi, got {self.intensity}")
        if self.ring < 0 or self.margin < 0 or self.line_width < 1:
            raise ValueError("FeatureConfig: ring and margin must be >= 0 and line_width >= 1, got "
                             f"ring={self.ring}, margin={self.margin}, line_width={self.line_width}")

    @property
    def max_pixels(self) -> int:
        """P: the most pixels a feature of this config can have."""
        s = self.size[1]
        if self.family == "random_walk":
            return int(s) + 1
        k = self.half_window
        return (2 * k + 1) ** 2

    @property
    def half_window(self) -> int:
        """Half side of the square window holding a template feature."""
        s = self.size[1]
        if self.family == "ellipse":
            return int(math.ceil(s))
        if self.family == "line":
            return int(math.ceil(s / 2 + self.line_width))
        if self.family == "gaussian":
            return int(math.ceil(s))  # 2 sigma = size
        return 0


# ---- placement ------------------------------------------------------------------------------

def placement_region(targets: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """Where feature centres may lie: (N, h, w) bool.

    "anatomy": foreground (pixels above cfg.foreground * max whose 5x5 mean is
    too, so isolated noise pixels drop out) intersected with the border margin; an
    image without foreground falls back to the margin box. "box": the authors'
    [50, 270) box of a 320 crop, scaled to (h, w).
    """
    N, h, w = targets.shape
    rows = torch.arange(h, device=targets.device)
    cols = torch.arange(w, device=targets.device)
    if cfg.placement == "box":
        r0, r1 = round(50 * h / 320), round(270 * h / 320)
        c0, c1 = round(50 * w / 320), round(270 * w / 320)
        box = ((rows >= r0) & (rows < r1))[:, None] & ((cols >= c0) & (cols < c1))[None, :]
        return box.expand(N, h, w).clone()
    m = min(cfg.margin, (h - 1) // 2, (w - 1) // 2)
    inner = ((rows >= m) & (rows < h - m))[:, None] & ((cols >= m) & (cols < w - m))[None, :]
    t = targets.float()
    smooth = F.avg_pool2d(t.unsqueeze(1), 5, stride=1, padding=2, count_include_pad=False).squeeze(1)
    thr = cfg.foreground * t.amax(dim=(-2, -1), keepdim=True)
    fg = (t > thr) & (smooth > thr)
    region = fg & inner
    empty = ~region.flatten(1).any(1)
    return torch.where(empty[:, None, None], inner.expand(N, h, w), region)


def sample_centres(region: torch.Tensor, R: int, generator: torch.Generator | None) -> torch.Tensor:
    """R centres per image drawn uniformly from ``region`` (N, h, w): (N, R, 2) int64 (row, col)."""
    N, h, w = region.shape
    weights = region.flatten(1).float()
    flat = torch.multinomial(weights, R, replacement=True, generator=generator)
    return torch.stack([flat // w, flat % w], dim=-1)


# ---- families -------------------------------------------------------------------------------

def _uniform(shape, lo: float, hi: float, generator, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device)


def _dedupe(flat: torch.Tensor) -> torch.Tensor:
    """Replace repeated indices of a feature by -1 (order not kept)."""
    flat, _ = flat.sort(dim=-1)
    dup = torch.zeros_like(flat, dtype=torch.bool)
    dup[..., 1:] = (flat[..., 1:] == flat[..., :-1]) & (flat[..., 1:] >= 0)
    return torch.where(dup, torch.full_like(flat, -1), flat)


def random_walk(centres: torch.Tensor, steps: torch.Tensor, P: int, hw: tuple[int, int],
                generator) -> torch.Tensor:
    """4-connected random walks from ``centres`` (N, R, 2) of ``steps`` (N, R) steps.

    Each step moves one pixel up/down/left/right with equal probability (the
    authors' walk); walks are clipped to the image. Returns (N, R, P) flat indices.
    """
    N, R, _ = centres.shape
    h, w = hw
    dev = centres.device
    moves = torch.tensor([[0, 1], [0, -1], [1, 0], [-1, 0]], device=dev)
    choice = torch.randint(0, 4, (N, R, P - 1), generator=generator, device=dev)
    pos = torch.cat([centres[:, :, None], centres[:, :, None] + moves[choice].cumsum(2)], dim=2)
    pos = torch.stack([pos[..., 0].clamp(0, h - 1), pos[..., 1].clamp(0, w - 1)], dim=-1)
    flat = pos[..., 0] * w + pos[..., 1]
    keep = torch.arange(P, device=dev) <= steps[..., None]
    return _dedupe(torch.where(keep, flat, torch.full_like(flat, -1)))


def _window(k: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    d = torch.arange(-k, k + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return dy.reshape(-1), dx.reshape(-1)


def template(family: str, centres: torch.Tensor, size: torch.Tensor, k: int, hw: tuple[int, int],
             generator, line_width: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Template features in a (2k+1)^2 window around ``centres`` (N, R, 2).

    size (N, R) or (N, R, 2) for ellipses (semi-axes). Returns flat indices (N, R, P)
    (-1 outside the shape or the image; the centre pixel is always kept) and a
    profile (N, R, P) in [0, 1] (1 except for the Gaussian's falloff).
    """
    N, R, _ = centres.shape
    h, w = hw
    dev = centres.device
    dy, dx = _window(k, dev)                                   # (P,)
    theta = _uniform((N, R, 1), 0.0, math.pi, generator, dev)
    c, s = torch.cos(theta), torch.sin(theta)
    u = c * dx + s * dy                                        # along the feature's axis
    v = -s * dx + c * dy
    profile = torch.ones(N, R, dy.numel(), device=dev)
    if family == "ellipse":
        a, b = size[..., 0:1], size[..., 1:2]
        inside = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    elif family == "line":
        # half-width at least sqrt(2)/2 so that oblique 1-pixel lines have no gaps
        inside = (u.abs() <= size[..., None] / 2) & (v.abs() <= max(line_width / 2, 0.5 * math.sqrt(2)))
    elif family == "gaussian":
        sigma = size[..., None] / 2
        r2 = dx ** 2 + dy ** 2
        inside = r2 <= (2 * sigma) ** 2
        profile = torch.exp(-r2 / (2 * sigma ** 2)).expand(N, R, -1)
    else:
        raise ValueError(f"template: unknown family {family!r}")
    centre = (dy == 0) & (dx == 0)
    inside = inside | centre
    rows = centres[..., 0:1] + dy.long()
    cols = centres[..., 1:2] + dx.long()
    inside = inside & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    flat = torch.where(inside, rows * w + cols, torch.full_like(rows, -1))
    return flat, torch.where(inside, profile, torch.zeros_like(profile))


def draw_supports(targets: torch.Tensor, cfg: FeatureConfig, R: int, generator: torch.Generator | None,
                  region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """R random feature supports per image.

    Args:
        targets: (N, h, w) real targets (for the placement region and the size).
        cfg: the feature config.
        R: candidates per image.
        generator: torch.Generator on targets' device (None: the global RNG).
        region: (N, h, w) bool placement region; default ``placement_region``.

    Returns:
        index (N, R, P) int64 with P = cfg.max_pixels, and profile (N, R, P) float32
        (the relative intensity shape, 1 except for Gaussian blobs, 0 at padding).
    """
    N, h, w = targets.shape
    dev = targets.device
    if region is None:
        region = placement_region(targets, cfg)
    centres = sample_centres(region, R, generator)
    lo, hi = cfg.size
    if cfg.family == "random_walk":
        steps = torch.randint(int(lo), int(hi) + 1, (N, R), generator=generator, device=dev)
        index = random_walk(centres, steps, cfg.max_pixels, (h, w), generator)
        return index, (index >= 0).float()
    if cfg.family == "ellipse":
        size = _uniform((N, R, 2), lo, hi, generator, dev)
    else:
        size = _uniform((N, R), lo, hi, generator, dev)
    return template(cfg.family, centres, size, cfg.half_window, (h, w), generator, cfg.line_width)


# ---- intensities ----------------------------------------------------------------------------

def intensity_bounds(targets: torch.Tensor, index: torch.Tensor, cfg: FeatureConfig
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Intensity bounds (N, R) of each feature, as set by ``cfg.intensity_mode``."""
    N, R, P = index.shape
    t = targets.float()
    lo_f, hi_f = cfg.intensity
    if cfg.intensity_mode == "fixed":
        lo = torch.full((N, R), lo_f, device=t.device)
        return lo, torch.full((N, R), hi_f, device=t.device)
    if cfg.intensity_mode == "image":
        mn = t.amin(dim=(-2, -1))[:, None].expand(N, R)
        mx = t.amax(dim=(-2, -1))[:, None].expand(N, R)
        return mn + lo_f * (mx - mn), mn + hi_f * (mx - mn)
    # local: fractions of the mean tissue intensity under the support
    vals = torch.gather(t.flatten(1)[:, None].expand(N, R, -1), 2, index.clamp_min(0))
    valid = (index >= 0).float()
    local = (vals * valid).sum(-1) / valid.sum(-1).clamp_min(1)
    return lo_f * local, hi_f * local


def draw_values(index: torch.Tensor, profile: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                generator: torch.Generator | None, per_pixel: bool = True) -> torch.Tensor:
    """Random intensities (N, R, P) in [lo, hi] (N, R), 0 at padding.

    per_pixel: the authors' walk draws each pixel uniformly; otherwise one
    amplitude per feature, shaped by ``profile`` (Gaussian blobs).
    """
    shape = index.shape if per_pixel else index.shape[:2] + (1,)
    u = torch.rand(shape, generator=generator, device=index.device)
    v = lo[..., None] + u * (hi - lo)[..., None]
    if not per_pixel:
        v = lo[..., None] + (v - lo[..., None]) * profile
    return torch.where(index >= 0, v.expand(index.shape), torch.zeros_like(profile)).contiguous()


def shift_index(index: torch.Tensor, shifts: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Move features by (dy, dx): index (N, P), shifts (K, 2) -> (N, K, P) indices and
    (N, K) validity (False where a pixel would leave the image)."""
    h, w = hw
    valid = index >= 0
    rows = (index // w)[:, None] + shifts[None, :, 0:1]
    cols = (index % w)[:, None] + shifts[None, :, 1:2]
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    ok = (inside | ~valid[:, None]).all(-1)
    flat = torch.where(valid[:, None] & inside, rows * w + cols, torch.full_like(rows, -1))
    return flat, ok
