"""Micro-batching: evaluating functions of a large batch one micro-batch at a time.

Layer 1 (uses JAX only): ``microbatch``, ``micro_vmap``, ``micro_grad``,
``reshape_batch_axis``, and the accumulators that combine the results.
"""

from optcore.microbatching._microbatching import (
    AccumulationType,
    Accumulator,
    Aux,
    micro_grad,
    micro_vmap,
    microbatch,
    reshape_batch_axis,
)

__all__ = [
    "AccumulationType",
    "Accumulator",
    "Aux",
    "micro_grad",
    "micro_vmap",
    "microbatch",
    "reshape_batch_axis",
]
