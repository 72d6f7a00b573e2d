"""fastfn operators: thin documented wrappers over torch.ops.fastfn.

masked_fft: fft2c, ifft2c, undersample, data_consistency.
features:   insert_features, feature_step.
"""
from fastfn.ops.features import feature_step, insert_features
from fastfn.ops.masked_fft import data_consistency, fft2c, ifft2c, undersample

__all__ = ["fft2c", "ifft2c", "undersample", "data_consistency", "insert_features", "feature_step"]
