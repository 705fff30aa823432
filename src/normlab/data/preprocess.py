"""Input preprocessing fitted on the training split only: none, scale, standardize, ZCA whiten."""

from __future__ import annotations

import numpy as np

from normlab.config.schema import Preprocess


class Preprocessor:
    """Fit statistics on training inputs, then apply the same map to every split."""

    def __init__(self, method: Preprocess, max_value: float, per_feature: bool, zca_epsilon: float):
        self.method, self.max_value = Preprocess(method), max_value
        self.per_feature, self.zca_epsilon = per_feature, zca_epsilon
        self.mean: np.ndarray | float = 0.0
        self.std: np.ndarray | float = 1.0
        self.whitening: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> Preprocessor:
        """Estimate mean / std / whitening matrix from training inputs."""
        if self.method in (Preprocess.none, Preprocess.scale):
            return self  # nothing to estimate
        flat = self._flat(x)
        if self.method is Preprocess.standardize:
            if self.per_feature:
                self.mean = flat.mean(axis=0)
                # constant features (e.g. MNIST's border pixels) keep their scale
                self.std = np.where(flat.std(axis=0) > 1e-8, flat.std(axis=0), 1.0)
            else:
                self.mean, self.std = float(flat.mean()), float(flat.std())
        elif self.method is Preprocess.whiten:
            scaled = flat / self.max_value
            self.mean = scaled.mean(axis=0)
            centred = scaled - self.mean
            covariance = centred.T @ centred / len(centred)
            eigenvalues, eigenvectors = np.linalg.eigh(covariance)
            # ZCA: rotate to the eigenbasis, rescale, rotate back (stays close to the input)
            scale = 1.0 / np.sqrt(np.clip(eigenvalues, 0.0, None) + self.zca_epsilon)
            self.whitening = (eigenvectors * scale) @ eigenvectors.T
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Apply the fitted map; returns float32 in the input's shape."""
        if self.method is Preprocess.none or (
            self.method is Preprocess.scale and float(np.float32(self.max_value)) == self.max_value
        ):
            # float32 throughout: the same bits as via float64 (one division by a float32,
            # correctly rounded either way) at a fraction of the time and peak memory
            out = x.astype(np.float32)  # a copy: dividing it in place leaves `x` as it was
            if self.method is Preprocess.scale:
                out /= np.float32(self.max_value)
            return out
        flat = self._flat(x)
        if self.method is Preprocess.scale:  # by a maximum float32 cannot hold exactly
            out = flat / self.max_value
        elif self.method is Preprocess.standardize:
            out = (flat - self.mean) / self.std
        else:
            out = (flat / self.max_value - self.mean) @ self.whitening
        return out.astype(np.float32).reshape(x.shape)

    @staticmethod
    def _flat(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), -1).astype(np.float64)
