r"""Memory-efficient semantic guided attention (paper eq. 7-9, docs/design.md section 4).

The literal formula materialises ``N * K * d * P`` attention weights (1 GB at COCO size, batch 8) and
autograd keeps them for the backward pass. Here the weights only ever exist for a chunk of
``(sample, channel)`` rows at a time, and the backward pass recomputes them from the features and the
embeddings, using the closed-form gradients

.. math::
    \frac{\partial o_{k,c}}{\partial e_{k,c}} = \sum_p a_{p,k,c}\, f_{p,c}\,(f_{p,c} - o_{k,c}),
    \qquad
    \frac{\partial o_{k,c}}{\partial f_{p,c}} = a_{p,k,c}\,\big(1 + e_{k,c}\,(f_{p,c} - o_{k,c})\big).

Everything works in a ``[N * d, K, P]`` layout (one softmax per row, positions last) so that the sums
over positions are batched matrix products over chunks that stay in the CPU's cache.

What keeps a chunk cheap (each pass over ``K * P`` values costs about one exponential's worth):

- The softmax maximum over positions is known in closed form, ``max_p e f_p = e * max_p f_p`` for
  ``e >= 0`` and ``e * min_p f_p`` otherwise, so no reduction pass is needed before the exponential,
  and the shifted scores ``e f_p - max`` take one broadcast product and one in-place addition.
- Exponentials are taken in base 2 (``exp(s) = 2 ** (s * log2(e))``, the factor folded into the
  embeddings): PyTorch's vectorised ``exp2`` is several times faster than its ``exp`` on x86 CPUs.
- The forward pass also sums ``a f^2``: with the softmax denominator it saves two ``[N, d, K]``
  tensors, from which the embeddings' gradient follows without recomputing anything.
- The features are centred per ``(sample, channel)`` on their mean over positions before anything
  else. The softmax of eq. 8 is unchanged (it shifts every score of a row by the same amount), the
  output shifts back exactly, and the variance-like sums of the gradients lose far less to
  cancellation.
"""

import math

import torch
from torch.autograd.function import once_differentiable

__all__ = []

# Elements of one attention chunk: 2**20 fp32 values (4 MiB, under 0.5% of the literal formula at
# COCO size); a chunk and its columns stay in the last-level cache between the passes over it.
_DEFAULT_CHUNK_ELEMENTS = 1 << 20

_LOG2_E = 1.0 / math.log(2.0)

# Shifted base-2 scores below this are raised to it before the exponential. 2**-126 is the smallest
# normal float32 (1.2e-38 of the row's largest weight), so results do not move; but exponentials
# that underflow to subnormals or zero run 4-30x slower on x86 CPUs, and trained feature maps (or a
# randomly initialised model's embeddings) reach that range often. Chunks that cannot reach it skip
# the clamp.
_MIN_SHIFTED_SCORE = -126.0


def _rows_per_chunk(num_rows: int, num_queries: int, num_positions: int, chunk_elements: int) -> int:
    return max(1, min(num_rows, chunk_elements // max(1, num_queries * num_positions)))


class _Scores:
    """Base-2 shifted scores ``(e f_p - max_p e f_p) * log2(e)`` of ``[N * d]`` rows, chunk by chunk.

    Args:
        centred: features minus their mean over positions, ``[N, d, P]``.
        embeddings: ``[K, d]``.
        chunk_elements: scores held at once.
    """

    def __init__(self, centred: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int) -> None:
        n, d, p = centred.shape
        k = embeddings.shape[0]
        self.rows = n * d
        embeddings_t = embeddings.t() * _LOG2_E  # [d, K]
        high = centred.amax(dim=2, keepdim=True)  # [N, d, 1]
        low = centred.amin(dim=2, keepdim=True)
        e = embeddings_t.unsqueeze(0)  # [1, d, K]
        self.neg_max = torch.where(e >= 0, e * high, e * low).neg_().reshape(self.rows, k, 1)
        self.row_embeddings = embeddings_t.unsqueeze(0).expand(n, d, k).reshape(self.rows, k, 1)
        self.positions = centred.reshape(self.rows, 1, p)
        self.step = _rows_per_chunk(self.rows, k, p, chunk_elements)
        self.scratch = centred.new_empty(self.step, k, p)
        chunks = -(-self.rows // self.step)
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            self.needs_clamp = [True] * chunks  # a traced graph cannot branch on the data
        else:
            # A row's lowest shifted score is -|e| * (max_p f - min_p f); clamp only where it can underflow.
            lowest = (high - low).squeeze(2) * embeddings_t.abs().amax(dim=1)  # [N, d]
            self.needs_clamp = self._per_chunk(lowest.reshape(-1) > -_MIN_SHIFTED_SCORE, chunks)

    def _per_chunk(self, row_flags: torch.Tensor, chunks: int) -> list[bool]:
        padded = row_flags.new_zeros(chunks * self.step)
        padded[: self.rows] = row_flags
        return padded.view(-1, self.step).any(dim=1).tolist()

    def chunks(self):
        """Yield ``(start, stop, weights)``: unnormalised eq. 8 weights ``exp(s)`` as ``[rows, K, P]``."""
        for index, start in enumerate(range(0, self.rows, self.step)):
            stop = min(self.rows, start + self.step)
            weights = self.scratch[: stop - start]
            torch.mul(self.row_embeddings[start:stop], self.positions[start:stop], out=weights)
            weights.add_(self.neg_max[start:stop])
            if self.needs_clamp[index]:
                weights.clamp_min_(_MIN_SHIFTED_SCORE)
            yield start, stop, torch.exp2(weights, out=weights)


def _attend(
    features: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int, for_backward: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Eq. 7-9 chunk by chunk.

    Args:
        features: ``[N, d, P]``.
        embeddings: ``[K, d]``.
        for_backward: also return what the backward pass needs.

    Returns:
        ``o`` as ``[N, d, K]``; with ``for_backward`` also the softmax denominators
        ``sum_p exp(s)`` (any common scale) and the weighted variances ``sum_p a f^2 - o^2`` (centred
        features), both ``[N * d, K]``; otherwise ``None`` twice.
    """
    n, d, p = features.shape
    k = embeddings.shape[0]
    mean = features.mean(dim=2, keepdim=True)
    centred = features - mean
    scores = _Scores(centred, embeddings, chunk_elements)
    rows = scores.rows
    # One matrix product yields the sums over positions of eq. 8-9 (and the second moment):
    # [1, f(, f^2)] x weights^T, [C, P] x [P, K] per row. MKL's batched GEMM is several times faster
    # with the contraction over the contiguous last dimension of both operands, and in this order.
    columns = [torch.ones_like(centred), centred] + ([centred.square()] if for_backward else [])
    sum_columns = torch.stack(columns, dim=2).reshape(rows, len(columns), p)
    sums = features.new_empty(rows, len(columns), k)
    for start, stop, weights in scores.chunks():
        torch.bmm(sum_columns[start:stop], weights.transpose(1, 2), out=sums[start:stop])
    denominators = sums[:, 0]
    centred_output = sums[:, 1].div_(denominators)
    output = centred_output.view(n, d, k) + mean
    if not for_backward:
        return output, None, None
    variances = sums[:, 2].div_(denominators).sub_(centred_output.square())
    return output, denominators.contiguous(), variances.contiguous()


class _SemanticGuidedAttentionFunction(torch.autograd.Function):
    """Eq. 7-9 whose backward pass recomputes the attention weights chunk by chunk.

    Saved for backward: the features, the embeddings, the output and two ``[N * d, K]`` tensors
    (softmax denominators and weighted variances), nothing of size ``K * P``.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int) -> torch.Tensor:
        output, denominators, variances = _attend(features, embeddings, chunk_elements, for_backward=True)
        ctx.chunk_elements = chunk_elements
        ctx.save_for_backward(features, embeddings, output, denominators, variances)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        features, embeddings, output, denominators, variances = ctx.saved_tensors
        n, d, k = output.shape
        grad = grad_output.reshape(n * d, k)
        grad_embeddings = None
        if ctx.needs_input_grad[1]:
            grad_embeddings = (variances * grad).view(n, d, k).sum(dim=0).t()
        grad_features = None
        if ctx.needs_input_grad[0]:
            grad_features = _features_backward(
                features, embeddings, output, denominators, grad, ctx.chunk_elements
            )
        return grad_features, grad_embeddings, None


def _features_backward(
    features: torch.Tensor,
    embeddings: torch.Tensor,
    output: torch.Tensor,
    denominators: torch.Tensor,
    grad: torch.Tensor,
    chunk_elements: int,
) -> torch.Tensor:
    r"""``dL/df`` of eq. 7-9 (docs/design.md section 4), recomputing the weights ``a`` per chunk.

    With ``g = dL/do`` and centred features ``f`` (output ``o`` centred alike),
    ``dL/df[p] = sum_k a[p,k] (g_k (1 - e_k o_k)) + f[p] * sum_k a[p,k] (g_k e_k)``: one matrix
    product ``[2, K] x [K, P]`` per row.

    Shapes: features ``[N, d, P]``, embeddings ``[K, d]``, output ``[N, d, K]``, denominators and
    grad ``[N * d, K]``. Returns ``[N, d, P]``.
    """
    n, d, p = features.shape
    k = embeddings.shape[0]
    rows = n * d
    mean = features.mean(dim=2, keepdim=True)
    centred = features - mean
    centred_output = (output - mean).reshape(rows, k)
    grad_e = grad * embeddings.t().repeat(n, 1)  # g_k e_k, [rows, K]
    # Normalising the coefficients instead of the weights saves a pass over every chunk.
    coefficients = torch.stack([grad - grad_e * centred_output, grad_e], dim=1)
    coefficients.div_(denominators.unsqueeze(1))
    contractions = features.new_empty(rows, 2, p)
    scores = _Scores(centred, embeddings, chunk_elements)
    for start, stop, weights in scores.chunks():
        torch.bmm(coefficients[start:stop], weights, out=contractions[start:stop])
    return torch.addcmul(contractions[:, 0], contractions[:, 1], centred.reshape(rows, p)).view(n, d, p)


def semantic_guided_attention_chunked(
    features: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS
) -> torch.Tensor:
    """Eq. 7-9 without materialising the ``[N, K, d, P]`` weights, in forward or backward.

    Args:
        features: ``[N, d, H, W]`` (float32 or float64; callers cast lower precisions up).
        embeddings: ``[K, d]`` of the same dtype.
        chunk_elements: attention weights held at once (per chunk of ``(sample, channel)`` rows).

    Returns:
        ``[N, K, d]``.
    """
    n, d, h, w = features.shape
    flat = features.reshape(n, d, h * w)
    if torch.is_grad_enabled() and (features.requires_grad or embeddings.requires_grad):
        output = _SemanticGuidedAttentionFunction.apply(flat, embeddings, chunk_elements)
    else:
        output, _, _ = _attend(flat, embeddings, chunk_elements)
    return output.transpose(1, 2).contiguous()
