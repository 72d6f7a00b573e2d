"""False-negative susceptibility map: one feature at every location of a grid inside the anatomy.

docs/METHOD.md section 7: for a slice y and grid locations p inside the anatomy,
L(p) is the worst masked NMSE of a feature of one family and size placed at p, the
intensities chosen by the attack (random draws or projected gradient steps, the
engine's :class:`~fastfn.attack.engine.Scorer` and ``feature_step``); the FN flag of
p is that of section 5 (L(p) >= threshold and the information preserved).

Grid: rows and columns ``stride // 2 + k * stride`` (each location stands for its
``stride x stride`` cell), kept where the placement region of the ``FeatureConfig``
holds (``placement_region``: the anatomy by default) and where a template feature's
window (``FeatureConfig.half_window``) lies inside the image.

Batched: the candidates of every point of the full grid of a slice are drawn first,
in one call with one generator per slice, and those of the locations kept; so a
location's draw depends only on its slice's seed, the stride and the image size,
never on which other locations are mapped or on the chunking (a map of one location
equals that location of the whole map). Then they go through the model ``chunk``
images at a time, locations of several slices mixed in one call. A location is a
"virtual slice" that shares the measurement of its slice (:class:`LocationAcquisition`),
so no k-space is copied per location.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from fastfn.attack import features as feat
from fastfn.attack.acquisition import Acquisition, from_batch
from fastfn.attack.config import AttackConfig
from fastfn.attack.engine import Candidates, Scorer, information_change, step_schedule
from fastfn.ops import feature_step, insert_features
from fastfn.seeding import derive_seed

#: keeps the map's draws apart from the other draws of one seed (fastfn.seeding)
MAP_STREAM = 23


def map_slice_seed(seed: int, slice_index: int) -> int:
    """Seed of the feature draws at every location of slice ``slice_index`` (its position
    in the evaluated slices): the same for every model and every chunk size."""
    return derive_seed(seed, (slice_index, 7_727), (MAP_STREAM, 1))


def grid_axes(shape: tuple[int, int], stride: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column positions ``stride // 2 + k * stride`` of the grid of an (h, w) image."""
    h, w = shape
    return (torch.arange(stride // 2, h, stride, device=device),
            torch.arange(stride // 2, w, stride, device=device))


def _check_stride(stride: int) -> None:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"susceptibility map: stride must be an integer >= 1 pixel, got {stride!r}")


def grid_locations(targets: torch.Tensor, fc: feat.FeatureConfig, stride: int,
                   names: Sequence[str] | None = None) -> list[torch.Tensor]:
    """The map's locations of each slice: a list of N int64 tensors (L_n, 2) of (row, col).

    targets: (N, h, w) real. Locations are the grid points (:func:`grid_axes`) inside
    ``placement_region(targets, fc)`` whose feature window (``fc.half_window`` pixels
    each side) lies inside the image. names: how to name slice n in errors.

    Raises ValueError when stride < 1 or when a slice has no location (the stride or the
    feature size leaves none inside the anatomy).
    """
    _check_stride(stride)
    N, h, w = targets.shape
    region = feat.placement_region(targets, fc)
    k = fc.half_window
    rows, cols = grid_axes((h, w), stride, targets.device)
    rows = rows[(rows >= k) & (rows < h - k)]
    cols = cols[(cols >= k) & (cols < w - k)]
    out = []
    for n in range(N):
        sub = region[n].index_select(0, rows).index_select(1, cols)
        r, c = torch.nonzero(sub, as_tuple=True)
        if r.numel() == 0:
            who = names[n] if names is not None else f"slice {n} of the batch"
            raise ValueError(
                f"susceptibility map: stride {stride} with {fc.family} features of size {fc.size} "
                f"(window half-width {k} px) leaves no location inside the {fc.placement} region of "
                f"{who} ({h}x{w} image); use a smaller stride or feature")
        out.append(torch.stack([rows[r], cols[c]], dim=1))
    return out


def grid_index(locations: torch.Tensor, shape: tuple[int, int], stride: int) -> torch.Tensor:
    """Flat index (L,) into the (gh, gw) grid of locations (L, 2); ValueError for a location
    that is not a grid point inside the image."""
    rows, cols = grid_axes(shape, stride, locations.device)
    gw = cols.numel()
    r, c = locations[:, 0], locations[:, 1]
    off = stride // 2
    ok = ((r - off) % stride == 0) & ((c - off) % stride == 0) & (r >= off) & (c >= off) \
        & (r < shape[0]) & (c < shape[1])
    if not bool(ok.all()):
        bad = locations[~ok][0].tolist()
        raise ValueError(f"susceptibility map: location {bad} is not a point of the stride-{stride} grid "
                         f"(rows and columns {off} + k * {stride}) of the {shape[0]}x{shape[1]} image")
    return ((r - off) // stride) * gw + (c - off) // stride


def supports_at(targets: torch.Tensor, fc: feat.FeatureConfig, centres: torch.Tensor,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature supports of ``fc``'s family and size around given centres.

    targets: (N, h, w) (shape and device only); centres: (N, R, 2) int64 (row, col).
    Returns index (N, R, P) int64 (P = fc.max_pixels, -1 padding) and profile (N, R, P),
    as :func:`fastfn.attack.features.draw_supports` does for centres it samples itself.
    """
    N, R, _ = centres.shape
    h, w = targets.shape[-2:]
    dev = targets.device
    lo, hi = fc.size
    if fc.family == "random_walk":
        steps = torch.randint(int(lo), int(hi) + 1, (N, R), generator=generator, device=dev)
        index = feat.random_walk(centres, steps, fc.max_pixels, (h, w), generator)
        return index, (index >= 0).float()
    shape = (N, R, 2) if fc.family == "ellipse" else (N, R)
    size = lo + (hi - lo) * torch.rand(shape, generator=generator, device=dev)
    return feat.template(fc.family, centres, size, fc.half_window, (h, w), generator, fc.line_width)


def location_candidates(target: torch.Tensor, cfg: AttackConfig, stride: int, R: int,
                        generator: torch.Generator | None) -> Candidates:
    """R random candidates (supports and intensities) at every point of the grid of one slice.

    target: (h, w) real. Returns :class:`Candidates` with index/values (G, R, P), bounds
    (G, R) and nmse -inf (not scored yet), G = gh * gw grid points in row-major order
    (:func:`grid_axes`); the map keeps those of its locations (:func:`grid_index`).
    """
    fc = cfg.features
    rows, cols = grid_axes(tuple(target.shape), stride, target.device)
    centres = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)
    G = centres.shape[0]
    targets = target.expand(G, *target.shape)
    index, profile = supports_at(targets, fc, centres[:, None].expand(G, R, 2), generator)
    lo, hi = feat.intensity_bounds(targets, index, fc)
    values = feat.draw_values(index, profile, lo, hi, generator, per_pixel=fc.family != "gaussian")
    return Candidates(index, values, lo.contiguous(), hi.contiguous(),
                      torch.full(lo.shape, -math.inf, device=target.device))


class LocationAcquisition:
    """The measurement model of M locations ("virtual slices") sharing their slices' data.

    Wraps the :class:`~fastfn.attack.acquisition.Acquisition` of a batch; location m
    belongs to slice ``owner[m]``. Offers what the engine's Scorer and
    ``information_change`` use: ``targets`` (M, h, w), ``mask`` (M, 1, W),
    ``simulate`` and ``zero_filled_change`` (with indices into the M locations).
    """

    def __init__(self, base: Acquisition, owner: torch.Tensor):
        self.base, self.owner = base, owner
        self.targets = base.targets.index_select(0, owner)
        self.mask = base.mask.index_select(0, owner)

    def _slices(self, slices: torch.Tensor | None) -> torch.Tensor:
        return self.owner if slices is None else self.owner.index_select(0, slices)

    def simulate(self, delta: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        return self.base.simulate(delta, self._slices(slices))

    def zero_filled_change(self, delta: torch.Tensor, slices: torch.Tensor | None = None) -> torch.Tensor:
        return self.base.zero_filled_change(delta, self._slices(slices))


def ascend(score: Scorer, targets: torch.Tensor, cand: Candidates, cfg: AttackConfig, steps: int) -> Candidates:
    """``steps`` projected sign-gradient steps on the intensities of given candidates.

    The engine's gradient attack (docs/METHOD.md section 5) from given starts instead of
    random ones: each step one forward + backward (``score(..., grad=True)``) and
    ``feature_step``, then a final forward; every candidate keeps the best intensities
    it visited (its starting score counts when it has one). targets (M, h, w).
    """
    pert, reg = insert_features(targets, cand.index, cand.values, cfg.features.ring)
    pert = pert.contiguous()
    values = cand.values.clone()
    best_values, best_nmse = values.clone(), cand.nmse.clone()
    span = (cand.hi - cand.lo).clamp_min(torch.finfo(targets.dtype).tiny)
    for t in range(steps):
        nmse, grad = score(pert, reg, grad=True)
        better = nmse > best_nmse
        best_nmse = torch.where(better, nmse, best_nmse)
        best_values = torch.where(better[..., None], values, best_values)
        feature_step(pert, values, cand.index, grad, cand.lo, cand.hi, step_schedule(t, steps, cfg) * span,
                     cfg.normalize)
    with torch.no_grad():
        nmse, _ = score(pert, reg)
    better = nmse > best_nmse
    return Candidates(cand.index, torch.where(better[..., None], values, best_values).contiguous(),
                      cand.lo, cand.hi, torch.where(better, nmse, best_nmse))


@dataclass
class SusceptibilityMap:
    """The map of one batch: L locations over its N slices, flattened (slice-major).

    Attributes:
        shape: (h, w) of the targets.
        stride: grid stride in pixels.
        slice: (L,) int64 batch index of each location's slice.
        rows, cols: (L,) int64 pixel position of each location.
        worst_nmse: (L,) worst masked NMSE at the location.
        info_mse: (L,) information change of the worst feature (docs/METHOD.md section 5).
        info_preserved: (L,) bool.
        fn: (L,) bool false-negative flag.
        index, values: (L, P) the worst feature of each location (compact form).
        label: (L,) int64 anatomy label at the location (batch ``labels``), or None.
        model_evals: images through the model (forward passes).
    """
    shape: tuple[int, int]
    stride: int
    slice: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    worst_nmse: torch.Tensor
    info_mse: torch.Tensor
    info_preserved: torch.Tensor
    fn: torch.Tensor
    index: torch.Tensor
    values: torch.Tensor
    label: torch.Tensor | None
    model_evals: int

    @property
    def n_slices(self) -> int:
        return int(self.slice.max()) + 1 if self.slice.numel() else 0

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(gh, gw): rows and columns of the grid."""
        h, w = self.shape
        s = self.stride
        return len(range(s // 2, h, s)), len(range(s // 2, w, s))

    def grid(self, values: torch.Tensor | None = None, n_slices: int | None = None) -> torch.Tensor:
        """Per-location values (default ``worst_nmse``) as (N, gh, gw) float64 grids,
        NaN where a grid point is not a location."""
        v = (self.worst_nmse if values is None else values).double()
        gh, gw = self.grid_shape
        n = self.n_slices if n_slices is None else n_slices
        out = torch.full((n, gh, gw), math.nan, dtype=torch.float64, device=v.device)
        out[self.slice, self.rows // self.stride, self.cols // self.stride] = v
        return out

    def image(self, values: torch.Tensor | None = None, n_slices: int | None = None) -> torch.Tensor:
        """The grids at pixel resolution, (N, h, w): each location's value over its
        stride x stride cell (NaN elsewhere), to overlay on the target."""
        g = self.grid(values, n_slices)
        s = self.stride
        h, w = self.shape
        cells = g.repeat_interleave(s, 1).repeat_interleave(s, 2)[:, :h, :w]
        out = torch.full((g.shape[0], h, w), math.nan, dtype=g.dtype, device=g.device)
        out[:, :cells.shape[1], :cells.shape[2]] = cells
        return out

    def to(self, device: torch.device | str) -> "SusceptibilityMap":
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return replace(self, **{k: move(getattr(self, k)) for k in (
            "slice", "rows", "cols", "worst_nmse", "info_mse", "info_preserved", "fn", "index", "values",
            "label")})


def check_map_config(cfg: AttackConfig) -> None:
    """The searches a map supports: random draws or the gradient attack per location."""
    if cfg.method == "pgd+refine":
        raise ValueError("susceptibility map: method 'pgd+refine' moves features off their grid location; "
                         "use 'random' or 'pgd'")


def susceptibility_map(model: nn.Module, batch: Mapping[str, Any], cfg: AttackConfig, stride: int = 4, *,
                       slice_seeds: Sequence[int] | None = None, locations: Sequence[torch.Tensor] | None = None,
                       progress: Callable[[int], Any] | None = None) -> SusceptibilityMap:
    """The susceptibility map of every slice of one batch.

    Args:
        model: a Reconstructor (put in eval mode during the search, mode restored).
        batch: a batch of the architecture contract (fully-sampled ``kspace``; ``labels``
            (N, h, w) optional: the map then records the anatomy label of each location).
        cfg: the attack: ``features`` (family, size, intensity bounds, placement, ring),
            ``method`` "random" (``random_restarts`` random features per location, the
            worst kept) or "pgd" (``pgd_restarts`` starts per location, the worst
            ``pgd_restarts`` of ``pgd_screen`` x as many when screening, ``pgd_steps``
            steps), ``chunk`` (most images per model call), ``threshold`` and
            ``info_threshold`` (the FN flag), ``seed``.
        stride: grid stride in pixels.
        slice_seeds: seed of each slice's draws (default ``map_slice_seed(cfg.seed, n)``
            for batch position n); pass positions in the whole data set so that a slice
            gets the same draws in any batch.
        locations: the locations per slice, points of the stride's grid (default
            :func:`grid_locations`: every grid point inside the anatomy).
        progress: called with the number of locations finished after each chunk.

    Every location's candidates are drawn before the first model call; all bad input
    (stride, a slice without location, method) raises ValueError before the model runs.
    """
    check_map_config(cfg)
    _check_stride(stride)
    acq = from_batch(batch)
    targets = acq.targets
    N, h, w = targets.shape
    dev = targets.device
    if locations is None:
        names = [f"{batch['fname'][n]} slice {int(batch['slice'][n])}" for n in range(N)] \
            if "fname" in batch and "slice" in batch else None
        locations = grid_locations(targets, cfg.features, stride, names)
    if slice_seeds is None:
        slice_seeds = [map_slice_seed(cfg.seed, n) for n in range(N)]
    if len(locations) != N or len(slice_seeds) != N:
        raise ValueError(f"susceptibility map: {N} slices but {len(locations)} location lists and "
                         f"{len(slice_seeds)} seeds")
    pgd = cfg.method != "random"
    R = cfg.pgd_restarts if pgd else cfg.random_restarts
    drawn = R * cfg.pgd_screen if pgd and cfg.pgd_screen > 1 else R
    locations = [loc.to(dev) for loc in locations]
    picks = [grid_index(loc, (h, w), stride) for loc in locations]
    parts = []
    for n in range(N):
        g = torch.Generator(device=dev)
        g.manual_seed(int(slice_seeds[n]))
        c = location_candidates(targets[n], cfg, stride, drawn, g)
        parts.append(Candidates(*(getattr(c, k).index_select(0, picks[n])
                                  for k in ("index", "values", "lo", "hi", "nmse"))))
    cands = Candidates(*(torch.cat([getattr(p, k) for p in parts]) for k in ("index", "values", "lo", "hi", "nmse")))
    owner = torch.cat([torch.full((len(loc),), n, dtype=torch.long, device=dev) for n, loc in enumerate(locations)])
    centres = torch.cat(locations)
    L = owner.numel()

    group = max(1, cfg.chunk // drawn)
    worst, info_mse, best_index, best_values = [], [], [], []
    evals = 0
    was_training = model.training
    model.eval()
    try:
        for s in range(0, L, group):
            sel = torch.arange(s, min(s + group, L), device=dev)
            sub = Candidates(*(t.index_select(0, sel) for t in (cands.index, cands.values, cands.lo, cands.hi,
                                                                 cands.nmse)))
            loc_acq = LocationAcquisition(acq, owner.index_select(0, sel))
            t_loc = loc_acq.targets
            score = Scorer(model, loc_acq, cfg.chunk)
            if not pgd or cfg.pgd_screen > 1:
                with torch.no_grad():
                    pert, reg = insert_features(t_loc, sub.index, sub.values, cfg.features.ring)
                    sub.nmse, _ = score(pert, reg)
                    del pert, reg
            if pgd:
                if cfg.pgd_screen > 1:
                    sub = sub.top(R)
                sub = ascend(score, t_loc, sub, cfg, cfg.pgd_steps)
            best = sub.best()
            mse, _ = information_change(loc_acq, t_loc, best, cfg.features.ring)
            worst.append(best.nmse[:, 0])
            info_mse.append(mse)
            best_index.append(best.index[:, 0])
            best_values.append(best.values[:, 0])
            evals += score.evals
            if progress is not None:
                progress(sel.numel())
    finally:
        model.train(was_training)
    worst_t, info_t = torch.cat(worst), torch.cat(info_mse)
    info = info_t >= cfg.info_threshold
    labels = batch.get("labels")
    label = None
    if labels is not None and torch.is_tensor(labels) and labels.shape[-2:] == (h, w):
        label = labels.to(dev)[owner, centres[:, 0], centres[:, 1]].long()
    return SusceptibilityMap(shape=(h, w), stride=stride, slice=owner, rows=centres[:, 0], cols=centres[:, 1],
                             worst_nmse=worst_t, info_mse=info_t, info_preserved=info,
                             fn=info & (worst_t >= cfg.threshold), index=torch.cat(best_index),
                             values=torch.cat(best_values), label=label, model_evals=evals)


def map_summary(m: SusceptibilityMap, threshold: float, label_names: Mapping[int, str] | None = None
                ) -> dict[str, Any]:
    """Numbers of a map (one slice or several): ``n_locations``, ``fn_fraction`` (the
    fraction of the anatomy's locations where a feature is a false negative),
    ``miss_fraction`` (worst masked NMSE >= threshold, information preserved or not),
    ``info_preserved_fraction``, mean / median worst NMSE and, with labels,
    ``per_label``: {label name: {n_locations, fn_fraction, miss_fraction, mean_worst_nmse}}."""
    v = m.worst_nmse.double().cpu()
    fn = m.fn.cpu()
    n = v.numel()

    def numbers(sel: torch.Tensor) -> dict[str, Any]:
        k = int(sel.sum())
        if k == 0:
            return {"n_locations": 0, "fn_fraction": math.nan, "miss_fraction": math.nan,
                    "mean_worst_nmse": math.nan}
        return {"n_locations": k, "fn_fraction": float(fn[sel].double().mean()),
                "miss_fraction": float((v[sel] >= threshold).double().mean()),
                "mean_worst_nmse": float(v[sel].mean())}

    out = numbers(torch.ones(n, dtype=torch.bool))
    out["info_preserved_fraction"] = float(m.info_preserved.cpu().double().mean()) if n else math.nan
    out["median_worst_nmse"] = float(v.median()) if n else math.nan
    out["threshold"] = threshold
    if m.label is not None:
        lab = m.label.cpu()
        names = label_names or {}
        out["per_label"] = {names.get(int(k), str(int(k))): numbers(lab == k) for k in lab.unique()}
    return out
