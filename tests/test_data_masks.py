"""Masks: exact agreement with fastMRI, statistics, the text form, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastfn.data import (EquispacedFractionMaskFunc, EquispacedMaskFunc, KspaceTransform,
                         MagicFractionMaskFunc, MagicMaskFunc, RandomMaskFunc, parse_mask_spec,
                         volume_seed)
from fastfn.data.masks import MASK_TYPES
from fastfn.data.transforms import apply_mask

# Pinned from fastMRI 0.3.0 (pip install --no-deps fastmri; fastmri/data/subsample.py
# imported on its own): mask_func(shape=(1, 640 or 320, W, 2), offset, seed) with the
# seed tuple(map(ord, fname)) for string names. Columns are the sampled indices.
# (kind, center_fractions, accelerations, W, seed, offset, num_low_frequencies, columns)
FASTMRI_MASKS = [
    ('random', [0.08, 0.04], [4, 8], 368, 'file1000001.h5', None, 15,
     [2, 4, 9, 22, 24, 51, 55, 57, 60, 66, 74, 82, 106, 108, 133, 147, 149, 153, 164, 170, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 208, 213, 233, 274, 296, 309, 318, 327, 328, 343, 361, 362]),
    ('random', [0.08], [4], 320, 'knee_000.h5', None, 26,
     [7, 9, 14, 16, 19, 22, 30, 35, 40, 43, 48, 51, 55, 70, 73, 76, 83, 89, 93, 104, 108, 109, 114, 117, 123, 128, 130, 138, 141, 143, 144, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 176, 182, 187, 188, 194, 195, 200, 202, 213, 219, 233, 242, 244, 250, 265, 268, 275, 292, 302, 319]),
    ('random', [0.08, 0.04], [4, 8], 37, 1234, None, 1,
     [10, 14, 15, 17, 18, 32]),
    ('equispaced', [0.08, 0.04], [4, 8], 368, 'file1000001.h5', None, 15,
     [4, 12, 20, 28, 36, 44, 52, 60, 68, 76, 84, 92, 100, 108, 116, 124, 132, 140, 148, 156, 164, 172, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 196, 204, 212, 220, 228, 236, 244, 252, 260, 268, 276, 284, 292, 300, 308, 316, 324, 332, 340, 348, 356, 364]),
    ('equispaced', [0.08], [4], 160, 'x.h5', None, 13,
     [1, 5, 9, 13, 17, 21, 25, 29, 33, 37, 41, 45, 49, 53, 57, 61, 65, 69, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 89, 93, 97, 101, 105, 109, 113, 117, 121, 125, 129, 133, 137, 141, 145, 149, 153, 157]),
    ('equispaced_fraction', [0.08, 0.04], [4, 8], 368, 'file1000001.h5', None, 15,
     [9, 20, 32, 43, 55, 66, 77, 89, 100, 111, 123, 134, 146, 157, 168, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 203, 214, 225, 237, 248, 260, 271, 282, 294, 305, 316, 328, 339, 351, 362]),
    ('equispaced_fraction', [0.08], [4], 372, 'file1000002.h5', None, 30,
     [4, 9, 15, 20, 26, 31, 37, 42, 47, 53, 58, 64, 69, 75, 80, 85, 91, 96, 102, 107, 113, 118, 123, 129, 134, 140, 145, 151, 156, 161, 167, 171, 172, 173, 174, 175, 176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 192, 193, 194, 195, 196, 197, 198, 199, 200, 205, 210, 216, 221, 227, 232, 237, 243, 248, 254, 259, 265, 270, 275, 281, 286, 292, 297, 303, 308, 313, 319, 324, 330, 335, 341, 346, 351, 357, 362, 368]),
    ('magic', [0.08, 0.04], [4, 8], 368, 'file1000001.h5', None, 15,
     [1, 9, 17, 25, 33, 41, 49, 57, 65, 73, 81, 89, 97, 105, 113, 121, 129, 137, 145, 153, 161, 169, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 197, 205, 213, 221, 229, 237, 245, 253, 261, 269, 277, 285, 293, 301, 309, 317, 325, 333, 341, 349, 357, 365]),
    ('magic', [0.08], [4], 321, 'odd.h5', None, 26,
     [3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59, 63, 67, 71, 75, 79, 83, 87, 91, 95, 99, 103, 107, 111, 115, 119, 123, 127, 131, 135, 139, 143, 147, 148, 149, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 173, 175, 179, 183, 187, 191, 195, 199, 203, 207, 211, 215, 219, 223, 227, 231, 235, 239, 243, 247, 251, 255, 259, 263, 267, 271, 275, 279, 283, 287, 291, 295, 299, 303, 307, 311, 315, 319]),
    ('magic_fraction', [0.08, 0.04], [4, 8], 368, 'file1000001.h5', None, 15,
     [5, 17, 29, 41, 53, 65, 77, 89, 101, 113, 125, 137, 149, 161, 173, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191, 197, 209, 221, 233, 245, 257, 269, 281, 293, 305, 317, 329, 341, 353, 365]),
    ('magic_fraction', [0.08], [4], 128, 7, None, 10,
     [3, 9, 15, 21, 27, 33, 39, 45, 51, 57, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 75, 81, 87, 93, 99, 105, 111, 117, 123]),
    ('equispaced', [0.08], [4], 64, 3, 2, 5,
     [2, 6, 10, 14, 18, 22, 26, 30, 31, 32, 33, 34, 38, 42, 46, 50, 54, 58, 62]),
]
# fastMRI RandomMaskFunc([0.08, 0.04], [4, 8], seed=42): three unseeded calls at W = 48.
FASTMRI_STATEFUL = [[5, 8, 10, 13, 17, 18, 21, 22, 23, 24, 25, 32, 36, 42],
                    [9, 19, 23, 24, 28, 34],
                    [0, 7, 17, 22, 23, 24, 25, 28, 31, 37, 41, 46]]


@pytest.mark.parametrize("kind,fractions,accels,width,seed,offset,num_low,columns", FASTMRI_MASKS)
def test_masks_equal_fastmri(kind, fractions, accels, width, seed, offset, num_low, columns):
    func = MASK_TYPES[kind](fractions, accels)
    s = volume_seed(seed) if isinstance(seed, str) else seed
    mask, n = func((1, 17, width), offset=offset, seed=s)
    assert mask.dtype == torch.float32 and mask.shape == (1, width)
    assert np.flatnonzero(mask[0].numpy()).tolist() == columns
    assert n == num_low
    # The per-call seed leaves the function's own state alone: same answer again.
    again, _ = func(width, offset=offset, seed=s)
    assert torch.equal(again, mask)


def test_unseeded_calls_follow_the_function_state_like_fastmri():
    func = RandomMaskFunc([0.08, 0.04], [4, 8], seed=42)
    got = [np.flatnonzero(func(48)[0][0].numpy()).tolist() for _ in range(3)]
    assert got == FASTMRI_STATEFUL


def test_seeded_call_restores_state():
    a = RandomMaskFunc([0.08], [4], seed=3)
    b = RandomMaskFunc([0.08], [4], seed=3)
    a(100, seed=(1, 2, 3))  # must not advance a's own stream
    assert torch.equal(a(100)[0], b(100)[0])


def test_centre_columns_and_random_acceleration():
    w, trials = 368, 400
    func = RandomMaskFunc([0.08], [4])
    counts = []
    for s in range(trials):
        mask, n = func(w, seed=s)
        m = mask[0].numpy()
        start = (w - n + 1) // 2
        assert n == round(w * 0.08) and m[start:start + n].all()
        counts.append(m.sum())
    # Expected sampled columns = W / acceleration; the mean of 400 draws is within 1%.
    assert abs(np.mean(counts) - w / 4) < 0.01 * w / 4


def test_fraction_kinds_reach_the_acceleration():
    for w in (320, 368, 372):
        mask, _ = EquispacedFractionMaskFunc([0.08], [4])(w, seed=1)
        assert abs(mask.sum().item() - w / 4) <= 2
        # Magic-fraction lines can fall inside the centre (fastMRI's behaviour, pinned
        # above), so it samples a few columns fewer, never more.
        mask, _ = MagicFractionMaskFunc([0.08], [4])(w, seed=1)
        assert 0.9 * w / 4 <= mask.sum().item() <= w / 4


def test_magic_mask_is_offset_between_halves():
    # Acceleration 4 without centre: each half sampled every 4th column, the two halves
    # not mirror images of each other (Defazio's offset).
    mask, _ = MagicMaskFunc([0.0], [4])(64, offset=0, seed=0)
    m = mask[0].numpy()
    assert m.sum() == 16
    assert not np.array_equal(m[1:], m[1:][::-1])


def test_transform_gives_every_slice_of_a_volume_the_same_mask():
    t = KspaceTransform(RandomMaskFunc([0.08, 0.04], [4, 8]), crop_size=16)
    k = (np.random.randn(32, 40) + 1j * np.random.randn(32, 40)).astype(np.complex64)
    masks = [t(k, None, None, {}, "file_a.h5", s)["mask"] for s in range(3)]
    assert all(torch.equal(masks[0], m) for m in masks)
    other = [t(k, None, None, {}, f"file_{c}.h5", 0)["mask"] for c in "bcdefgh"]
    assert any(not torch.equal(masks[0], m) for m in other)


def test_apply_mask_never_samples_padding():
    k = torch.ones(8, 50, dtype=torch.complex64)
    masked, mask, _ = apply_mask(k, EquispacedMaskFunc([0.5], [2]), seed=0, padding=(5, 44))
    assert mask[0, :5].sum() == 0 and mask[0, 44:].sum() == 0 and mask[0, 5:44].sum() > 0
    assert torch.equal(masked, k * mask)


def test_parse_mask_spec():
    f = parse_mask_spec("random:4x@0.08,8x@0.04")
    assert isinstance(f, RandomMaskFunc)
    assert f.accelerations == [4, 8] and f.center_fractions == [0.08, 0.04]
    assert isinstance(f.accelerations[0], int)
    g = parse_mask_spec("Equispaced_Fraction: 4x @ 0.08", seed=5)
    assert isinstance(g, EquispacedFractionMaskFunc)
    assert torch.equal(g(100)[0], EquispacedFractionMaskFunc([0.08], [4], seed=5)(100)[0])
    assert parse_mask_spec("magic_fraction:6x@0.06").kind == "magic_fraction"
    assert parse_mask_spec("equispaced:2.5x@0.1").accelerations == [2.5]


@pytest.mark.parametrize("spec,fragment", [
    ("random", "KIND:ACCx@FRACTION"), ("spiral:4x@0.08", "KIND"), ("random:4@0.08", "4@0.08"),
    ("random:4x@0.08,", "''"), ("random:0.5x@0.08", "below 1"), ("random:4x@1.5", "not in [0, 1]"),
])
def test_parse_mask_spec_errors(spec, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_mask_spec(spec)


def test_mismatched_pairs_rejected():
    with pytest.raises(ValueError, match="2 center_fractions but 1 accelerations"):
        RandomMaskFunc([0.08, 0.04], [4])


# fastMRI 0.3.0, allow_any_combination=True, fractions [0.08, 0.04], accelerations [4, 8],
# shape (1, 64, 100, 2), seed tuple(map(ord, "any.h5")): (num_low_frequencies, columns).
FASTMRI_ANY_COMBINATION = {
    "random": (4, [0, 1, 2, 8, 10, 11, 12, 20, 23, 26, 27, 29, 34, 38, 48, 49, 50, 51, 52, 57,
                   59, 70, 71, 75, 77, 80, 91, 93, 96]),
    "equispaced_fraction": (4, [3, 8, 12, 17, 21, 26, 30, 35, 40, 44, 48, 49, 50, 51, 53, 58,
                                62, 67, 72, 76, 81, 85, 90, 94]),
}


@pytest.mark.parametrize("kind", sorted(FASTMRI_ANY_COMBINATION))
def test_any_combination_equals_fastmri(kind):
    func = MASK_TYPES[kind]([0.08, 0.04], [4, 8], allow_any_combination=True)
    mask, n = func(100, seed=volume_seed("any.h5"))
    assert (n, np.flatnonzero(mask[0].numpy()).tolist()) == FASTMRI_ANY_COMBINATION[kind]


# --------------------------------------------------------------------------- fastMRI's real layout

@pytest.mark.parametrize("kind,fractions,accels,width,seed,offset,num_low,columns", FASTMRI_MASKS)
def test_fastmri_real_layout_gives_fastmri_mask_shape(kind, fractions, accels, width, seed, offset,
                                                      num_low, columns):
    """fastMRI's call ``mask_func((1, H, W, 2), offset, seed)``: W from dim -2, mask (1, 1, W, 1)."""
    func = MASK_TYPES[kind](fractions, accels)
    s = volume_seed(seed) if isinstance(seed, str) else seed
    mask, n = func((1, 640, width, 2), offset, s)
    assert mask.dtype == torch.float32 and mask.shape == (1, 1, width, 1)
    assert np.flatnonzero(mask.reshape(-1).numpy()).tolist() == columns and n == num_low
    coil_mask, _ = func((15, 640, width, 2), offset, s)       # multi-coil: still ones but W at -2
    assert coil_mask.shape == (1, 1, width, 1) and torch.equal(coil_mask, mask)
    flat, n_flat = func((1, 640, width), offset, s)            # fastfn's complex layout, same columns
    assert flat.shape == (1, width) and torch.equal(flat.reshape(-1), mask.reshape(-1))
    assert n_flat == n


def test_two_column_shapes_follow_the_documented_rule():
    """(H, 2) is a complex k-space two columns wide; (..., H, W, 2) with >= 3 dims is fastMRI's."""
    func = EquispacedMaskFunc([0.5], [2])
    assert func((64, 2), seed=0)[0].shape == (1, 2)
    assert func(2, seed=0)[0].shape == (1, 2)
    assert func((1, 64, 30, 2), seed=0)[0].shape == (1, 1, 30, 1)


def _fastmri_subsample():
    """fastMRI's fastmri/data/subsample.py, imported on its own (it needs only numpy and torch)."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.find_spec("fastmri")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the fastmri package is not installed (pip install --no-deps fastmri==0.3.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "subsample.py"
    mod_spec = importlib.util.spec_from_file_location("_fastmri_subsample", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return module


FASTMRI_CLASS_NAMES = {"random": "RandomMaskFunc", "equispaced": "EquiSpacedMaskFunc",
                       "equispaced_fraction": "EquispacedMaskFractionFunc", "magic": "MagicMaskFunc",
                       "magic_fraction": "MagicMaskFractionFunc"}


@pytest.mark.parametrize("kind", sorted(FASTMRI_CLASS_NAMES))
@pytest.mark.parametrize("width", [368, 372, 320, 101])
def test_both_layouts_equal_installed_fastmri(kind, width):
    """Same seeds -> the same columns and centre count as fastMRI's own mask functions, for
    fastMRI's real-layout call and fastfn's complex-layout call alike."""
    subsample = _fastmri_subsample()
    fractions, accels = [0.08, 0.04], [4, 8]
    theirs = getattr(subsample, FASTMRI_CLASS_NAMES[kind])(fractions, accels, seed=11)
    ours = MASK_TYPES[kind](fractions, accels, seed=11)
    for fname in ("file1000001.h5", "file1001234.h5", "knee_a.h5"):
        seed = volume_seed(fname)
        ref, ref_n = theirs((1, 640, width, 2), None, seed)
        got, n = ours((1, 640, width, 2), None, seed)
        assert got.shape == ref.shape == (1, 1, width, 1)
        assert torch.equal(got, ref) and n == ref_n
        flat, flat_n = ours((640, width), seed=seed)
        assert torch.equal(flat[0], ref.reshape(-1)) and flat_n == ref_n
    # unseeded calls consume the functions' own streams alike
    for _ in range(3):
        ref, ref_n = theirs((1, 640, width, 2))
        got, n = ours((1, 640, width, 2))
        assert torch.equal(got, ref) and n == ref_n
