"""A deterministic knee-like phantom: coronal proton-density slices with anatomy labels.

Geometry is built from signed distance functions on a normalised grid
(x = columns, y = rows, both in [-1, 1), y grows downwards), so it scales to any
matrix size. One volume is a stack of coronal slices from anterior to posterior:
bone sections grow and shrink smoothly, the intercondylar notch and the cruciate
ligaments appear in the middle slices, and the trabecular texture drifts slowly
from slice to slice. Per-volume anatomy (size, joint height, condyle radius and
spacing, cartilage thickness, meniscus size, rotation, fat thickness, effusion)
and tissue intensities are drawn from the volume's random generator.

Relative proton-density intensities (fat = 1): marrow 0.85 (fatty, with dark
trabeculae), fluid 0.78, cartilage 0.62, muscle 0.42, ligaments 0.12, menisci
0.08, cortical bone 0.06, air 0.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

#: Anatomy label table of ``fastfn_labels`` (uint8).
LABELS: Dict[int, str] = {
    0: "background",
    1: "fat",
    2: "muscle",
    3: "femur_marrow",
    4: "tibia_marrow",
    5: "cortical_bone",
    6: "femoral_cartilage",
    7: "tibial_cartilage",
    8: "medial_meniscus",
    9: "lateral_meniscus",
    10: "fluid",
    11: "ligament",
}
LABEL_IDS = {name: i for i, name in LABELS.items()}

#: Mean relative PD intensity per label (jittered per volume).
INTENSITY = np.array([0.0, 1.0, 0.42, 0.85, 0.85, 0.06, 0.62, 0.62, 0.08, 0.08, 0.78, 0.12],
                     dtype=np.float32)

__all__ = ["LABELS", "LABEL_IDS", "INTENSITY", "knee_volume"]


# -- signed distance functions (negative inside) --------------------------------------
def _circle(x, y, cx, cy, r):
    return np.hypot(x - cx, y - cy) - r


def _box(x, y, cx, cy, hx, hy, r=0.0):
    qx = np.abs(x - cx) - hx + r
    qy = np.abs(y - cy) - hy + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _ellipse(x, y, cx, cy, a, b, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u = (x - cx) * c + (y - cy) * s
    v = -(x - cx) * s + (y - cy) * c
    return (np.sqrt((u / a) ** 2 + (v / b) ** 2) - 1.0) * min(a, b)


def _smooth_union(a, b, k):
    h = np.maximum(k - np.abs(a - b), 0.0)
    return np.minimum(a, b) - h * h / (4 * k)


def _triangle(x, y, p0, p1, p2):
    """Boolean mask of points inside the triangle (any vertex order)."""
    def edge(pa, pb):
        return (pb[0] - pa[0]) * (y - pa[1]) - (pb[1] - pa[1]) * (x - pa[0])
    e0, e1, e2 = edge(p0, p1), edge(p1, p2), edge(p2, p0)
    return ((e0 >= 0) & (e1 >= 0) & (e2 >= 0)) | ((e0 <= 0) & (e1 <= 0) & (e2 <= 0))


def _bandpass_noise(rng: np.random.Generator, n: int, cycles: float, width: float) -> np.ndarray:
    """Unit-variance isotropic noise (n, n) with its power on a ring of ``cycles`` per FOV."""
    white = rng.standard_normal((n, n), dtype=np.float32)
    f = np.fft.fftfreq(n) * n
    radius = np.hypot(f[:, None], f[None, : n // 2 + 1])
    filt = np.exp(-0.5 * ((radius - cycles) / width) ** 2)
    out = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(n, n)).astype(np.float32)
    return out / (out.std() + 1e-12)


def _anatomy(rng: np.random.Generator) -> Dict[str, float]:
    u = rng.uniform
    return {
        "scale": u(0.88, 1.08), "joint_y": u(-0.08, 0.08), "shift_x": u(-0.05, 0.05),
        "angle": np.deg2rad(u(-6, 6)), "condyle_r": u(0.2, 0.25), "condyle_dx": u(0.2, 0.26),
        "notch_w": u(0.07, 0.1), "plateau_w": u(0.46, 0.54), "cart": u(0.022, 0.034),
        "gap": u(0.008, 0.016), "cortex": u(0.014, 0.022), "men_len": u(0.12, 0.16),
        "men_h": u(0.07, 0.095), "body_a": u(0.8, 0.9), "fat": u(0.06, 0.12),
        "effusion": u(0.0, 1.0), "texture_phase": u(0, 2 * np.pi), "texture_turns": u(0.5, 1.2),
    }


def _slice_labels(x, y, p, t, notch_on, lig_on, fluid_on) -> np.ndarray:
    """Label map (h, w) uint8 of the coronal section at position t in [-1, 1]."""
    s = p["scale"]
    section = np.sqrt(max(0.0, 1.0 - (t / 1.2) ** 2))  # bone sections shrink at the ends
    jy = p["joint_y"]
    ct, gap, cort = p["cart"] * s, p["gap"] * s, p["cortex"] * s
    half_space = ct + gap / 2
    lab = np.zeros(x.shape, dtype=np.uint8)

    body = _ellipse(x, y, 0.0, 0.0, p["body_a"] * s * (0.92 + 0.08 * section), 1.6)
    lab[body < 0] = LABEL_IDS["fat"]
    muscle = body + p["fat"] * s
    # Periarticular fat at the joint line instead of muscle.
    lab[(muscle < 0) & (np.abs(y - jy) > 0.16 * s)] = LABEL_IDS["muscle"]

    # Femur: two condyles, a shaft with a flared metaphysis, the intercondylar notch.
    r = p["condyle_r"] * s * (0.6 + 0.4 * section)
    dx = p["condyle_dx"] * s
    cy = jy - half_space - r
    femur = np.minimum(_circle(x, y, -dx, cy, r), _circle(x, y, dx, cy, r))
    femur = _smooth_union(femur, _box(x, y, 0.0, cy - 0.9, 0.2 * s * (0.8 + 0.2 * section), 0.9), 0.18 * s)
    notch = _ellipse(x, y, 0.0, jy - half_space, p["notch_w"] * s, 0.17 * s)
    if notch_on:
        femur = np.maximum(femur, -notch)
    # Tibia: plateau with rounded corners, shaft below.
    pw = p["plateau_w"] * s * (0.75 + 0.25 * section)
    top = jy + half_space
    tibia = _box(x, y, 0.0, top + 0.16 * s, pw, 0.16 * s, 0.06 * s)
    tibia = _smooth_union(tibia, _box(x, y, 0.0, top + 1.0, 0.19 * s * (0.8 + 0.2 * section), 0.8), 0.18 * s)

    lab[femur < 0] = LABEL_IDS["femur_marrow"]
    lab[tibia < 0] = LABEL_IDS["tibia_marrow"]
    lab[((femur < 0) & (femur > -cort)) | ((tibia < 0) & (tibia > -cort))] = LABEL_IDS["cortical_bone"]

    # Cartilage on the weight-bearing surfaces, joint fluid between them.
    fem_cart = (femur >= 0) & (femur < ct) & (y > cy + 0.25 * r)
    if notch_on:
        fem_cart &= notch > 0.01
    tib_cart = (tibia >= 0) & (tibia < ct) & (y < top + 0.02 * s) & (np.abs(x) < pw - 0.04 * s)
    joint = (femur >= 0) & (tibia >= 0) & (femur < ct + gap) & (tibia < ct + gap) & (np.abs(x) < pw)
    if fluid_on:
        lab[joint] = LABEL_IDS["fluid"]
    lab[fem_cart] = LABEL_IDS["femoral_cartilage"]
    lab[tib_cart] = LABEL_IDS["tibial_cartilage"]

    # Menisci: wedges at the joint margins, base outside, apex pointing inwards.
    ml, mh = p["men_len"] * s * (0.7 + 0.3 * section), p["men_h"] * s
    for side, name in ((-1, "medial_meniscus"), (1, "lateral_meniscus")):
        xo = side * (pw + 0.01 * s)
        xi = xo - side * ml
        wedge = _triangle(x, y, (xo, jy - mh / 2), (xo, jy + mh / 2), (xi, jy))
        lab[wedge & (femur >= 0) & (tibia >= 0)] = LABEL_IDS[name]

    # Cruciate ligaments in the notch; collateral ligaments along the joint sides.
    if lig_on:
        lig = _ellipse(x, y, 0.0, jy - 0.05 * s, 0.035 * s, 0.12 * s, angle=np.deg2rad(70))
        lab[(lig < 0) & (femur >= 0) & (tibia >= 0)] = LABEL_IDS["ligament"]
    for side in (-1, 1):
        coll = _box(x, y, side * (pw + 0.05 * s), jy, 0.012 * s, 0.2 * s)
        lab[(coll < 0) & (femur >= 0) & (tibia >= 0)] = LABEL_IDS["ligament"]
    # Effusion in a lateral recess in some knees.
    if p["effusion"] > 0.5:
        pocket = _ellipse(x, y, pw + 0.05 * s, jy - 0.12 * s, 0.03 * s, 0.07 * s)
        lab[(pocket < 0) & (femur >= 0) & (tibia >= 0)] = LABEL_IDS["fluid"]
    return lab


def knee_volume(rng: np.random.Generator, slices: int, size: int) -> Tuple[np.ndarray, np.ndarray]:
    """One knee volume: magnitude images float32 (slices, size, size), fat ~ 1, and
    labels uint8 (slices, size, size) (see :data:`LABELS`)."""
    if slices < 1 or size < 16:
        raise ValueError(f"knee_volume: need slices >= 1 and size >= 16, got {slices}, {size}")
    p = _anatomy(rng)
    coords = (np.arange(size, dtype=np.float32) - size / 2) / (size / 2)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    x = c * (xx - p["shift_x"]) + s * yy
    y = -s * (xx - p["shift_x"]) + c * yy
    ts = np.linspace(-0.9, 0.9, slices) if slices > 1 else np.zeros(1)

    labels = np.stack([_slice_labels(x, y, p, t, notch_on=t > -0.45, lig_on=abs(t) < 0.45,
                                     fluid_on=abs(t) < 0.85) for t in ts])

    intensity = INTENSITY * rng.uniform(0.95, 1.05, size=INTENSITY.shape).astype(np.float32)
    intensity[0] = 0.0
    image = intensity[labels]

    # Trabecular bone: dark thin lines at the zero crossings of band-passed noise, the
    # noise rotating slowly between two fields along the volume (smooth in slices).
    # ~36 trabecular cycles per FOV at 320 (9 px); at small matrices a 5 px period,
    # the finest texture the grid shows well.
    cycles = min(size / 5, 36.0)
    t0 = _bandpass_noise(rng, size, cycles=cycles, width=cycles / 4.5)
    t1 = _bandpass_noise(rng, size, cycles=cycles, width=cycles / 4.5)
    m0 = _bandpass_noise(rng, size, cycles=3, width=2)
    m1 = _bandpass_noise(rng, size, cycles=3, width=2)
    marrow = (labels == LABEL_IDS["femur_marrow"]) | (labels == LABEL_IDS["tibia_marrow"])
    muscle = labels == LABEL_IDS["muscle"]
    for i, t in enumerate(ts):
        phi = p["texture_phase"] + p["texture_turns"] * np.pi * t
        trab = np.cos(phi) * t0 + np.sin(phi) * t1
        lines = np.exp(-(trab / 0.35) ** 2)
        image[i][marrow[i]] *= (1.0 - 0.45 * lines[marrow[i]])
        low = np.cos(phi) * m0 + np.sin(phi) * m1
        image[i][muscle[i]] *= (1.0 + 0.08 * low[muscle[i]])
    # Partial-volume blur of the tissue boundaries (about half a pixel at 320).
    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.6, 0.6), mode="constant")
    return image.astype(np.float32), labels
