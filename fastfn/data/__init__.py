"""fastfn.data: fastMRI-compatible datasets, masks, transforms, synthetic data, importers.

Typical use::

    from fastfn.data import SliceDataset, KspaceTransform, collate, parse_mask_spec, default_data
    ds = SliceDataset(default_data("train"),
                      KspaceTransform(parse_mask_spec("random:4x@0.08,8x@0.04")))
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate)

Batches follow the contract in docs/ARCHITECTURE.md.
"""
from fastfn.data.annotations import Box, read_annotations, write_annotation_csv
from fastfn.data.collate import check_batch, collate, fit_kspace
from fastfn.data.h5io import ismrmrd_header, parse_ismrmrd_header, write_fastmri_h5
from fastfn.data.importers import import_images, import_kspace, load_image_stack
from fastfn.data.masks import (MASK_TYPES, EquispacedFractionMaskFunc, EquispacedMaskFunc,
                               MagicFractionMaskFunc, MagicMaskFunc, MaskFunc, RandomMaskFunc,
                               parse_mask_spec, split_mask_specs, volume_seed)
from fastfn.data.mri_data import BadFileError, RawSample, RawSlice, SliceDataset, inspect_file
from fastfn.data.phantom import LABELS, knee_volume
from fastfn.data.samplers import VolumeDistributedSampler
from fastfn.data.synthetic import annotation_rows, cache_dir, default_data, write_synthetic_dataset
from fastfn.data.transforms import (KspaceTransform, UnetNormalize, apply_mask, center_crop,
                                    complex_abs_rss, denormalize, normalize, normalize_instance,
                                    zero_filled_magnitude)

__all__ = [
    "SliceDataset", "RawSample", "RawSlice", "inspect_file", "BadFileError",
    "KspaceTransform", "UnetNormalize", "apply_mask", "center_crop", "complex_abs_rss", "zero_filled_magnitude",
    "normalize", "normalize_instance", "denormalize", "collate", "fit_kspace", "check_batch",
    "VolumeDistributedSampler",
    "MaskFunc", "RandomMaskFunc", "EquispacedMaskFunc", "EquispacedFractionMaskFunc",
    "MagicMaskFunc", "MagicFractionMaskFunc", "MASK_TYPES", "parse_mask_spec", "split_mask_specs", "volume_seed",
    "write_synthetic_dataset", "default_data", "annotation_rows", "write_annotation_csv",
    "Box", "read_annotations",
    "cache_dir", "LABELS", "knee_volume",
    "import_images", "import_kspace", "load_image_stack",
    "ismrmrd_header", "parse_ismrmrd_header", "write_fastmri_h5",
]
