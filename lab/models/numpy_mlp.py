"""E10's multilayer perceptron from scratch: NumPy only, backpropagation written by hand.

The network is ``x -> [affine -> activation] x n -> affine -> softmax`` trained with mini-batch
gradient descent on the mean cross-entropy. ``gradients`` is the backward pass written out
layer by layer; ``numerical_gradients`` checks it by central differences, which is how one
knows the hand-written derivatives are right.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

ACTIVATIONS = ("sigmoid", "relu", "tanh")


def _activate(z: np.ndarray, name: str) -> np.ndarray:
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "relu":
        return np.maximum(z, 0.0)
    return np.tanh(z)


def _activation_derivative(z: np.ndarray, a: np.ndarray, name: str) -> np.ndarray:
    """d activation / d z, written with the already computed output ``a`` where cheaper."""
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "relu":
        return (z > 0).astype(z.dtype)
    return 1.0 - a**2


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclasses.dataclass
class NumpyMLP:
    """Weights and biases of an MLP; ``init`` builds one with Glorot-uniform weights.

    Attributes:
        weights: one (fan_in, fan_out) matrix per layer.
        biases: one (fan_out,) vector per layer.
        activation: hidden activation, one of ``ACTIVATIONS``.
    """

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    activation: str = "sigmoid"

    @classmethod
    def init(cls, sizes: Sequence[int], activation: str = "sigmoid", seed: int = 0) -> "NumpyMLP":
        """Args: sizes = (inputs, hidden..., classes), e.g. (64, 50, 10) for one hidden layer."""
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, received {activation!r}.")
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"sizes must be at least (inputs, classes), all positive; received {tuple(sizes)}.")
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights.append(rng.uniform(-limit, limit, size=(fan_in, fan_out)))
            biases.append(np.zeros(fan_out))
        return cls(weights, biases, activation)

    def forward(self, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Returns the pre-activations ``zs`` and activations ``activations`` of every layer.

        ``activations[0]`` is the input and ``activations[-1]`` the softmax probabilities.
        """
        activations, zs = [x], []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = activations[-1] @ w + b
            zs.append(z)
            last = i == len(self.weights) - 1
            activations.append(softmax(z) if last else _activate(z, self.activation))
        return zs, activations

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[1][-1]

    def loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy of integer labels ``y``."""
        probs = self.predict_proba(x)
        return float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))

    def gradients(self, x: np.ndarray, y: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Backpropagation: d loss / d weights and d loss / d biases, layer by layer.

        For softmax with cross-entropy the error at the output is simply
        ``delta = probs - one_hot(y)`` (divided by the batch size for the mean). Each earlier
        layer's error is the next layer's error sent back through its weights, times the
        derivative of the activation: ``delta_l = (delta_{l+1} @ W_{l+1}^T) * f'(z_l)``.
        """
        zs, activations = self.forward(x)
        n = len(y)
        delta = activations[-1].copy()
        delta[np.arange(n), y] -= 1.0
        delta /= n
        grad_w = [np.empty_like(w) for w in self.weights]
        grad_b = [np.empty_like(b) for b in self.biases]
        for layer in range(len(self.weights) - 1, -1, -1):
            grad_w[layer] = activations[layer].T @ delta
            grad_b[layer] = delta.sum(axis=0)
            if layer:
                delta = (delta @ self.weights[layer].T) * _activation_derivative(
                    zs[layer - 1], activations[layer], self.activation)
        return grad_w, grad_b

    def numerical_gradients(self, x: np.ndarray, y: np.ndarray, epsilon: float = 1e-5):
        """Central-difference gradients of the loss, parameter by parameter (slow; for checks)."""
        grads = []
        for params in (self.weights, self.biases):
            layer_grads = []
            for p in params:
                g = np.zeros_like(p)
                for index in np.ndindex(p.shape):
                    original = p[index]
                    p[index] = original + epsilon
                    plus = self.loss(x, y)
                    p[index] = original - epsilon
                    minus = self.loss(x, y)
                    p[index] = original
                    g[index] = (plus - minus) / (2 * epsilon)
                layer_grads.append(g)
            grads.append(layer_grads)
        return grads[0], grads[1]


def gradient_check(model: NumpyMLP, x: np.ndarray, y: np.ndarray) -> float:
    """The relative difference between backprop and numerical gradients over all parameters,
    ``|a - n| / (|a| + |n|)`` with Euclidean norms (about 1e-10 when right, 1e-2 and more for a
    wrong derivative).

    Norms rather than the worst single entry: the central difference is off by about 1e-11 in
    every entry, which is a relative error of 1e-6 on an entry whose gradient is itself 1e-5, so
    an entry-by-entry ratio flagged right gradients for some seeds.
    """
    analytic_w, analytic_b = model.gradients(x, y)
    numeric_w, numeric_b = model.numerical_gradients(x, y)
    analytic = np.concatenate([g.ravel() for g in analytic_w + analytic_b])
    numeric = np.concatenate([g.ravel() for g in numeric_w + numeric_b])
    return float(np.linalg.norm(analytic - numeric) / max(1e-12, np.linalg.norm(analytic) + np.linalg.norm(numeric)))


def train_numpy_mlp(
    model: NumpyMLP,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 50,
    batch_size: int = 32,
    learning_rate: float = 0.5,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Mini-batch gradient descent; returns one dict of loss and accuracy per epoch.

    Args:
        model: updated in place.
        x_train, x_val: flattened inputs scaled to [0, 1], shape (n, features).
        y_train, y_val: integer labels.
        epochs, batch_size, learning_rate: plain SGD settings.
        seed: shuffles the mini-batches.
    """
    if learning_rate <= 0 or epochs < 1 or batch_size < 1:
        raise ValueError(f"learning_rate, epochs and batch_size must be positive; received "
                         f"{learning_rate}, {epochs}, {batch_size}.")
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            grad_w, grad_b = model.gradients(x_train[batch], y_train[batch])
            for w, b, gw, gb in zip(model.weights, model.biases, grad_w, grad_b):
                w -= learning_rate * gw
                b -= learning_rate * gb
        history.append({
            "loss": model.loss(x_train, y_train),
            "accuracy": float(np.mean(model.predict_proba(x_train).argmax(1) == y_train)),
            "val_loss": model.loss(x_val, y_val),
            "val_accuracy": float(np.mean(model.predict_proba(x_val).argmax(1) == y_val)),
        })
    return history
