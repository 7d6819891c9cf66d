"""The vector a site masks: its example-weighted model update, plus its weight.

FedAvg's new model is ``sum_i n_i w_i / sum_i n_i``. Under secure aggregation
the centre may learn only sums, so each site sends
``[n_i * clip(w_i - g), n_i]`` (``g`` the model it received, ``clip`` to
``+-clip`` per element) and the centre, from the unmasked sum, computes
``g + sum_i n_i (w_i - g) / sum_i n_i`` -- the same model, to fixed-point
precision, as long as no update element was clipped.

Only floating-point arrays are in the vector (weights, biases, and BatchNorm
running means and variances, which are averaged like weights). Integer arrays
(BatchNorm's ``num_batches_tracked`` step counters) do not belong in a
bounded fixed-point sum and say nothing the average needs: they keep the
value of the model the centre sent.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedbone.errors import Problem
from fedbone.federation.secure_aggregation.errors import SecureAggregationError
from fedbone.federation.secure_aggregation.fixed_point import FixedPoint

__all__ = [
    "apply_average",
    "decode_sum",
    "encode_input",
    "masked_keys",
    "masked_size",
    "weighted_update",
]

Arrays = Mapping[str, np.ndarray]
Signature = Mapping[str, tuple[tuple[int, ...], str]]


def masked_keys(arrays: Arrays) -> list[str]:
    """Return the keys of the floating-point arrays, in the model's order."""
    return [key for key, value in arrays.items() if np.asarray(value).dtype.kind == "f"]


def masked_size(signature: Signature) -> int:
    """Elements of the masked update of a model ``{key: (shape, dtype)}``."""
    return sum(
        int(np.prod(shape, dtype=np.int64))
        for shape, dtype in signature.values()
        if np.dtype(dtype).kind == "f"
    )


def weighted_update(
    trained: Arrays, received: Arrays, weight: int, clip: float
) -> np.ndarray:
    """Return ``weight * clip(trained - received)`` over the float arrays.

    Parameters
    ----------
    trained
        The site's model after its local training.
    received
        The global model it was sent (same keys and shapes).
    weight
        The site's ``num-examples``.
    clip
        Largest magnitude of one update element.
    """
    keys = masked_keys(received)
    problems = [
        Problem("model-mismatch", "the trained model lacks or reshapes it", key)
        for key in keys
        if key not in trained or np.shape(trained[key]) != np.shape(received[key])
    ]
    SecureAggregationError.raise_if_any("model update", problems)
    if not keys:
        return np.zeros(0)
    update = np.concatenate(
        [
            (
                np.asarray(trained[key], dtype=np.float64)
                - np.asarray(received[key], dtype=np.float64)
            ).ravel()
            for key in keys
        ]
    )
    return weight * np.clip(update, -clip, clip)


def encode_input(values: np.ndarray, weight: int, codec: FixedPoint) -> np.ndarray:
    """Return the site's input ``[encode(values), weight]`` as ``uint64``.

    Parameters
    ----------
    values
        The weighted update (:func:`weighted_update`).
    weight
        The site's ``num-examples``: the last element, as a whole number.
    codec
        The round's fixed-point encoding.
    """
    return np.concatenate([codec.encode(values), np.array([weight], dtype=np.uint64)])


def decode_sum(total: np.ndarray, codec: FixedPoint) -> tuple[np.ndarray, int]:
    """Split an unmasked sum into the summed weighted update and total weight."""
    total = np.asarray(total, dtype=np.uint64)
    return codec.decode(total[:-1]), int(total[-1:].view(np.int64)[0])


def apply_average(
    received: Arrays, summed: np.ndarray, total_weight: int
) -> dict[str, np.ndarray]:
    """Return ``received + summed / total_weight`` (float arrays; others kept).

    Parameters
    ----------
    received
        The global model the sites were sent.
    summed
        The decoded sum of the sites' weighted updates.
    total_weight
        The sum of their weights.
    """
    average = np.asarray(summed, dtype=np.float64) / total_weight
    result: dict[str, np.ndarray] = {}
    offset = 0
    for key, value in received.items():
        value = np.asarray(value)
        if value.dtype.kind != "f":
            result[key] = value.copy()
            continue
        part = average[offset : offset + value.size].reshape(value.shape)
        offset += value.size
        result[key] = (value.astype(np.float64) + part).astype(value.dtype)
    if offset != average.size:
        raise SecureAggregationError(
            "aggregate",
            [
                Problem(
                    "model-mismatch",
                    f"the sum holds {average.size} values, the model {offset}",
                )
            ],
        )
    return result
