"""check_batch: the part of the batch contract training and evaluation rely on."""
from __future__ import annotations

import pytest
import torch

from fastfn.data import check_batch, collate


def _sample(width: int = 16, low: int = 4, target: bool = True, fname: str = "a.h5") -> dict:
    """One sample dict of the contract (single-coil, 8 x ``width`` k-space, 6 x 6 target)."""
    k = torch.randn(8, width, dtype=torch.complex64)
    mask = torch.zeros(1, width)
    c = width // 2
    mask[:, c - low // 2:c - low // 2 + low] = 1.0
    mask[:, ::4] = 1.0
    shape = (6, 6) if target else (0, 0)
    return {"kspace": k, "masked_kspace": k * mask, "mask": mask, "target": torch.rand(shape),
            "zero_filled": torch.rand(6, 6), "max": torch.tensor(1.0), "fname": fname,
            "slice": torch.tensor(0), "num_low_frequencies": torch.tensor(low)}


def test_a_batch_of_the_contract_passes():
    check_batch(collate([_sample(), _sample(fname="b.h5")]), "random:4x@0.08", "training")
    # differing widths padded by collate: the mask follows the k-space
    check_batch(collate([_sample(16), _sample(20, fname="b.h5")]), "random:4x@0.08", "training")


def test_mask_of_another_width():
    batch = collate([_sample()])
    batch["mask"] = batch["mask"][..., :12]
    with pytest.raises(ValueError) as e:
        check_batch(batch, "m12.npy", "training")
    assert str(e.value) == ("training data: mask 'm12.npy' has 12 columns but the k-space of "
                            "a.h5 has 16")


def test_batch_without_target():
    with pytest.raises(ValueError) as e:
        check_batch(collate([_sample(target=False, fname="test.h5")]), "random:4x@0.08",
                    "evaluation")
    assert str(e.value) == ("evaluation data: test.h5 has no target image (a test-set file?); "
                            "training and evaluation need fully sampled targets")


@pytest.mark.parametrize("empty_mask", [False, True])
def test_mask_without_centre(empty_mask):
    batch = collate([_sample(low=0)])
    if empty_mask:  # the centre is counted but nothing at all is sampled
        batch["num_low_frequencies"] = torch.tensor([4])
        batch["mask"] = torch.zeros_like(batch["mask"])
    with pytest.raises(ValueError) as e:
        check_batch(batch, "random:4x@0.001", "validation")
    assert str(e.value) == ("validation data: mask 'random:4x@0.001' samples no centre columns "
                            "of a.h5 (k-space width 16); its centre fraction is too small for "
                            "this width")
