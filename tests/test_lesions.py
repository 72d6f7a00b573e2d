"""Annotated lesions: fastMRI+-style CSV reading, errors inside boxes, box-weighted loss."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from fastfn.data import annotation_rows, write_annotation_csv
from fastfn.data.annotations import Box, box_weight_map, read_annotations
from fastfn.evaluation.lesions import lesion_metrics
from fastfn.evaluation.tables import lesion_table
from fastfn.train.box_loss import make_box_loss


class Fixed(torch.nn.Module):
    """A 'reconstructor' returning fixed images (looked up by the batch's first k-space value)."""

    def __init__(self, images: dict[float, torch.Tensor]):
        super().__init__()
        self.images = images

    def forward(self, kspace, mask, crop_size=None):
        return torch.stack([self.images[float(k[0, 0].real)] for k in kspace])


def test_reads_the_synthetic_generators_csv_and_boxes_cover_the_labels(tmp_path):
    labels = np.zeros((40, 50), np.uint8)
    from fastfn.data.phantom import LABEL_IDS
    labels[5:9, 10:20] = LABEL_IDS["medial_meniscus"]      # rows 5..8, cols 10..19
    labels[30:33, 2:40] = LABEL_IDS["femoral_cartilage"]
    rows = annotation_rows(labels, "vol_a", 3)
    write_annotation_csv(tmp_path / "a.csv", rows)
    boxes = read_annotations(tmp_path / "a.csv")
    assert {b.label for b in boxes} == {"Meniscus", "Cartilage"}
    m = {b.label: box_weight_map([b], (40, 50)) for b in boxes}
    assert torch.equal(m["Meniscus"].bool(), torch.from_numpy(labels == LABEL_IDS["medial_meniscus"]))
    assert torch.equal(m["Cartilage"].bool(),
                       torch.from_numpy(labels == LABEL_IDS["femoral_cartilage"]))
    assert all(b.file == "vol_a" and b.slice == 3 for b in boxes)


def test_csv_errors_name_file_line_and_column(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("file,slice,x,y,width,label\nf,0,1,2,3,L\n")
    with pytest.raises(ValueError, match="height"):
        read_annotations(p)
    p.write_text("file,slice,study_level,x,y,width,height,label\n"
                 "f,0,Yes,,,,,Study\nf,zero,No,1,2,3,4,L\n")
    with pytest.raises(ValueError, match=r"line 3: column 'slice'"):
        read_annotations(p)
    with pytest.raises(FileNotFoundError):
        read_annotations(tmp_path / "none.csv")
    p.write_text("file,slice,study_level,x,y,width,height,label\nf.h5,2,Yes,,,,,Study\n"
                 "f.h5,2,No,1,2,3,4,L\n")
    (box,) = read_annotations(p, y_origin="top")
    assert box == Box("f", 2, 1, 2, 3, 4, "L", "top")
    assert box.clipped(10, 10) == (2, 6, 1, 4)


def test_lesion_metrics_against_numpy_and_skimage():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 24, 24, generator=g) + 0.5
    good = target + 0.01 * torch.randn(2, 24, 24, generator=g)
    bad = target.clone()
    bad[:, 2:10, 3:12] = 0.0                       # misses the lesion of slice 0 entirely
    kspace = torch.zeros(2, 24, 24, dtype=torch.complex64)
    kspace[0, 0, 0], kspace[1, 0, 0] = 1.0, 2.0
    batch = {"masked_kspace": kspace, "mask": torch.ones(2, 1, 24), "target": target,
             "max": torch.tensor([2.0, 2.0]), "fname": ["vol.h5", "vol.h5"],
             "slice": torch.tensor([0, 1])}
    models = {"good": Fixed({1.0: good[0], 2.0: good[1]}), "bad": Fixed({1.0: bad[0], 2.0: bad[1]})}
    boxes = [Box("vol", 0, 3, 2, 9, 8, "Tear", "top"),     # rows 2..9, cols 3..11: 8x9 (SSIM)
             Box("vol", 1, 0, 0, 4, 3, "Tear", "top"),     # 3x4: NMSE only
             Box("vol", 1, 20, 20, 10, 10, "Edema", "top"),  # clipped to 4x4
             Box("other", 0, 0, 0, 5, 5, "Tear", "top")]   # no such slice
    res = lesion_metrics(models, [batch], boxes)
    assert res["n_slices"] == 2 and res["unmatched_boxes"] == 1
    t = target.numpy()
    for name, pred in (("good", good.numpy()), ("bad", bad.numpy())):
        tear = res["labels"]["Tear"][name]
        regions = [(0, slice(2, 10), slice(3, 12)), (1, slice(0, 3), slice(0, 4))]
        ref = [((t[i][r, c] - pred[i][r, c]) ** 2).sum() / (t[i][r, c] ** 2).sum()
               for i, r, c in regions]
        assert tear["nmse"] == pytest.approx(np.mean(ref), rel=1e-5)
        assert tear["n_boxes"] == 2 and tear["n_ssim_boxes"] == 1
        ssim_ref = structural_similarity(t[0][2:10, 3:12], pred[0][2:10, 3:12], win_size=7,
                                         data_range=2.0)
        assert tear["ssim"] == pytest.approx(ssim_ref, abs=1e-4)
        edema = res["labels"]["Edema"][name]
        assert edema["n_boxes"] == 1 and edema["ssim"] is None
    assert res["labels"]["Tear"]["bad"]["nmse"] > 100 * res["labels"]["Tear"]["good"]["nmse"]
    assert "| Tear | bad | 2 |" in lesion_table(res)


def test_box_loss_only_sees_the_boxes():
    target = torch.rand(2, 16, 16) + 1.0
    pred_img = target.clone()
    pred_img[0, 0, 0] = 5.0                          # error outside every box
    kspace = torch.zeros(2, 16, 16, dtype=torch.complex64)
    kspace[0, 0, 0], kspace[1, 0, 0] = 1.0, 2.0
    batch = {"masked_kspace": kspace, "mask": torch.ones(2, 1, 16), "target": target,
             "fname": ["vol.h5", "vol.h5"], "slice": torch.tensor([0, 1])}
    boxes = [Box("vol", 1, 4, 4, 4, 4, "L", "top")]
    fn = make_box_loss(boxes, weight=2.0)
    loss, logs = fn(Fixed({1.0: pred_img[0], 2.0: pred_img[1]}), batch, 0)
    assert float(loss) == 0.0
    pred_img[1, 5, 5] += 0.5                         # error inside the box of slice 1
    loss, logs = fn(Fixed({1.0: pred_img[0], 2.0: pred_img[1]}), batch, 0)
    ref = 0.5 / 16 / float(target[1, 4:8, 4:8].mean())
    assert logs["box_loss"] == pytest.approx(ref, rel=1e-5)
    assert float(loss) == pytest.approx(2.0 * ref, rel=1e-5)
    nobox = {**batch, "slice": torch.tensor([0, 0])}
    assert float(fn(None, nobox, 0)[0]) == 0.0       # no forward without boxes
    with pytest.raises(ValueError, match="kind"):
        make_box_loss(boxes, kind="huber")
