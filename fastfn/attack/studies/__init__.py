"""Robustness studies beyond one false-negative rate (docs/METHOD.md section 7), batched on the device.

- :mod:`~fastfn.attack.studies.susceptibility`: :func:`susceptibility_map`, the worst
  masked NMSE and FN flag of one feature at every location of a grid inside the anatomy;
- :mod:`~fastfn.attack.studies.detectability`: :func:`contrast_detail_batch` and
  :func:`contrast_detail_table`, FN rates over feature sizes x contrasts and the
  contrast-detail curve;
- :mod:`~fastfn.attack.studies.kspace_noise`: :func:`kspace_noise_attack`, an
  l2-bounded adversarial perturbation of the measured k-space beside random noise of
  the same norm, aimed at the whole image or at annotated boxes.

Running them for several models on the same slices and draws, and their files and
figures: ``fastfn.evaluation.studies``.
"""
from fastfn.attack.studies.detectability import (cell_config, cell_seed, check_grid, contrast_detail_batch,
                                                 contrast_detail_table)
from fastfn.attack.studies.kspace_noise import (NoiseConfig, ZeroFilled, check_boxes, check_levels,
                                                kspace_noise_attack, noise_seed, random_kspace_noise,
                                                reconstruction_metrics)
from fastfn.attack.studies.susceptibility import (SusceptibilityMap, grid_locations, location_candidates,
                                                  map_slice_seed, map_summary, susceptibility_map)

__all__ = ["susceptibility_map", "SusceptibilityMap", "grid_locations", "location_candidates", "map_slice_seed",
           "map_summary", "contrast_detail_batch", "contrast_detail_table", "cell_config", "cell_seed",
           "check_grid", "kspace_noise_attack", "random_kspace_noise", "reconstruction_metrics", "NoiseConfig",
           "ZeroFilled", "check_levels", "check_boxes", "noise_seed"]
