"""The evaluation layer: the robustness protocol, lesion-box metrics and the demo pipeline.

- :mod:`fastfn.evaluation.robustness`: ``evaluate_robustness`` (clean metrics and
  false-negative rates of several models on the same slices and feature draws);
- :mod:`fastfn.evaluation.lesions`: errors inside fastMRI+-style annotation boxes;
- :mod:`fastfn.evaluation.demo`: ``run_demo``, the end-to-end main job.
"""
from fastfn.evaluation.robustness import AttackSettings, evaluate_robustness

__all__ = ["AttackSettings", "evaluate_robustness"]
