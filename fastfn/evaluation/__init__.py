"""The evaluation layer: the robustness protocol, lesion-box metrics, checkpoint
evaluation and the demo pipeline.

- :mod:`fastfn.evaluation.protocol`: ``evaluate_robustness`` (clean metrics and
  false-negative rates of several models on the same slices and feature draws), with
  its tables (:mod:`~fastfn.evaluation.tables`) and figures (:mod:`~fastfn.evaluation.figures`);
- :mod:`fastfn.evaluation.lesions`: errors inside fastMRI+-style annotation boxes;
- :mod:`fastfn.evaluation.checkpoint`: ``evaluate_checkpoint`` (``fastfn eval``);
- :mod:`fastfn.evaluation.demo`: ``run_demo``, the end-to-end main job.
"""
from fastfn.evaluation.protocol import DEFAULT_ATTACK, evaluate_robustness

__all__ = ["DEFAULT_ATTACK", "evaluate_robustness"]
