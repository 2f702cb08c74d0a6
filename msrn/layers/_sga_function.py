r"""Memory-efficient semantic guided attention (paper eq. 7-9, docs/design.md section 4).

The literal formula materialises ``N * K * d * P`` attention weights (4 GB at COCO size, batch 8) and
autograd keeps them for the backward pass. Here the weights only ever exist for a chunk of
``(sample, channel)`` rows at a time, and the backward pass recomputes them from the features, the
embeddings and the output, using the closed-form gradients

.. math::
    \frac{\partial o_{k,c}}{\partial e_{k,c}} = \sum_p a_{p,k,c}\, f_{p,c}\,(f_{p,c} - o_{k,c}),
    \qquad
    \frac{\partial o_{k,c}}{\partial f_{p,c}} = a_{p,k,c}\,\big(1 + e_{k,c}\,(f_{p,c} - o_{k,c})\big).

Everything works in a ``[N * d, K, P]`` layout (one softmax per row, positions last) so that the two
sums over positions of the forward pass and the two contractions of the backward pass are batched
matrix products over chunks that stay in the CPU's cache.

Two tricks keep the chunks cheap and the results accurate:

- The softmax maximum over positions is known in closed form, ``max_p e f_p = e * max_p f_p`` for
  ``e >= 0`` and ``e * min_p f_p`` otherwise, so no reduction pass is needed before the exponential.
- The features are centred per ``(sample, channel)`` on their mean over positions before anything
  else. The softmax of eq. 8 is unchanged (it shifts every score of a row by the same amount), the
  output shifts back exactly, and the variance-like sums of the gradients lose far less to
  cancellation.
"""
from typing import Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

__all__ = []

# Elements of one attention chunk: 2**22 fp32 values (16 MiB, under 1% of the literal formula at COCO size).
# Fewer, larger chunks matter on a busy CPU: every op is one OpenMP barrier, and a barrier stalls
# whenever one of its threads is descheduled. Measured best among 2**19..2**23 on a loaded 2-core VM.
_DEFAULT_CHUNK_ELEMENTS = 1 << 22

# Shifted scores below this are raised to it before the exponential. exp(-87) is still a normal
# float32 (> 1.2e-38) and at most 1e-38 relative to the row's largest weight, so results do not
# move; but exponentials that underflow to subnormals or zero run 10-30x slower on x86 CPUs, and
# trained feature maps hit that range all the time.
_MIN_SHIFTED_SCORE = -87.0


def _rows_per_chunk(num_rows: int, num_queries: int, num_positions: int, chunk_elements: int) -> int:
    return max(1, min(num_rows, chunk_elements // max(1, num_queries * num_positions)))


def _centred(features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[N, d, P]`` features minus their mean over positions, and that mean ``[N, d, 1]``."""
    mean = features.mean(dim=2, keepdim=True)
    return features - mean, mean


def _neg_score_max(centred: torch.Tensor, embeddings_t: torch.Tensor) -> torch.Tensor:
    """``-max_p e[k,c] * f[n,c,p]`` as ``[N, d, K, 1]``, from the extremes of ``f`` (no pass over ``K*P``)."""
    high = centred.amax(dim=2, keepdim=True)  # [N, d, 1]
    low = centred.amin(dim=2, keepdim=True)
    e = embeddings_t.unsqueeze(0)  # [1, d, K]
    return torch.where(e >= 0, e * high, e * low).neg_().unsqueeze(-1)


def _per_row_embeddings(embeddings_t: torch.Tensor, batch: int) -> torch.Tensor:
    """``[d, K]`` -> ``[N * d, K, 1]`` so that every chunk of ``(n, c)`` rows reads a plain slice."""
    d, k = embeddings_t.shape
    return embeddings_t.unsqueeze(0).expand(batch, d, k).reshape(batch * d, k, 1)


def _attend(
    features: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 7-9 chunk by chunk.

    Args:
        features: ``[N, d, P]``.
        embeddings: ``[K, d]``.

    Returns:
        ``o`` as ``[N, d, K]``, the centred features ``[N, d, P]`` and their mean ``[N, d, 1]``.
    """
    n, d, p = features.shape
    k = embeddings.shape[0]
    centred, mean = _centred(features)
    embeddings_t = embeddings.t()
    rows = n * d
    neg_max = _neg_score_max(centred, embeddings_t).reshape(rows, k, 1)
    row_embeddings = _per_row_embeddings(embeddings_t, n)
    positions = centred.reshape(rows, 1, p)
    # One matrix product yields both sums over positions of eq. 8-9: sum_p exp(s) f_p and sum_p exp(s).
    # Stored as [rows, 2, P] and used transposed: MKL's batched GEMM is several times faster with
    # the contraction over the contiguous last dimension of both operands.
    sum_columns = torch.stack([centred, torch.ones_like(centred)], dim=2).reshape(rows, 2, p).transpose(1, 2)
    sums = features.new_empty(rows, k, 2)
    step = _rows_per_chunk(rows, k, p, chunk_elements)
    scratch = features.new_empty(step, k, p)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        weights = scratch[: stop - start]
        torch.addcmul(neg_max[start:stop], row_embeddings[start:stop], positions[start:stop], out=weights)
        weights.clamp_min_(_MIN_SHIFTED_SCORE).exp_()
        torch.bmm(weights, sum_columns[start:stop], out=sums[start:stop])
    output = sums[..., 0].div_(sums[..., 1]).view(n, d, k).add_(mean)
    return output, centred, mean


class _SemanticGuidedAttentionFunction(torch.autograd.Function):
    """Eq. 7-9 whose backward pass recomputes the attention weights chunk by chunk.

    Saved for backward: the features, the embeddings and the output, nothing of size ``K * P``.
    """

    @staticmethod
    def forward(ctx, features: torch.Tensor, embeddings: torch.Tensor, chunk_elements: int) -> torch.Tensor:
        output, _, _ = _attend(features, embeddings, chunk_elements)
        ctx.chunk_elements = chunk_elements
        ctx.save_for_backward(features, embeddings, output)
        return output

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        features, embeddings, output = ctx.saved_tensors
        grad_features, grad_embeddings = _attend_backward(
            features, embeddings, output, grad_output, ctx.chunk_elements,
            need_features=ctx.needs_input_grad[0], need_embeddings=ctx.needs_input_grad[1],
        )
        return grad_features, grad_embeddings, None


def _attend_backward(
    features: torch.Tensor,
    embeddings: torch.Tensor,
    output: torch.Tensor,
    grad_output: torch.Tensor,
    chunk_elements: int,
    need_features: bool = True,
    need_embeddings: bool = True,
) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    r"""Closed-form gradients of eq. 7-9 (docs/design.md section 4), recomputing ``a`` per chunk.

    With ``g = dL/do`` and centred features ``f`` (output ``o`` centred alike):

    - ``dL/df[p] = sum_k a[p,k] (g_k (1 - e_k o_k)) + f[p] * sum_k a[p,k] (g_k e_k)``: one matrix
      product ``[2, K] x [K, P]`` per row.
    - ``dL/de[k] = sum_n g_k (sum_p a[p,k] f[p]^2 - o_k^2)``: the inner sum is a matrix product
      ``[K, P] x [P, 1]``, batched with the softmax denominator.

    Shapes: features ``[N, d, P]``, embeddings ``[K, d]``, output and grad_output ``[N, d, K]``.
    """
    n, d, p = features.shape
    k = embeddings.shape[0]
    rows = n * d
    centred, mean = _centred(features)
    centred_output = (output - mean).reshape(rows, k)
    grad = grad_output.reshape(rows, k)
    embeddings_t = embeddings.t()
    neg_max = _neg_score_max(centred, embeddings_t).reshape(rows, k, 1)
    row_embeddings = _per_row_embeddings(embeddings_t, n)
    positions = centred.reshape(rows, 1, p)
    # Columns [1, f^2]: the softmax denominator and the unnormalised second moment in one product.
    moment_columns = torch.stack([torch.ones_like(centred), centred.square()], dim=2).reshape(rows, 2, p)
    moment_columns = moment_columns.transpose(1, 2)
    moments = features.new_empty(rows, k, 2)
    if need_features:
        grad_e = grad * row_embeddings.squeeze(-1)  # g_k e_k
        coefficients = torch.stack([grad - grad_e * centred_output, grad_e], dim=1)  # [rows, 2, K]
        contractions = features.new_empty(rows, 2, p)
    step = _rows_per_chunk(rows, k, p, chunk_elements)
    scratch = features.new_empty(step, k, p)
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        weights = scratch[: stop - start]
        torch.addcmul(neg_max[start:stop], row_embeddings[start:stop], positions[start:stop], out=weights)
        weights.clamp_min_(_MIN_SHIFTED_SCORE).exp_()
        chunk_moments = moments[start:stop]
        torch.bmm(weights, moment_columns[start:stop], out=chunk_moments)
        if need_features:
            # Normalising the coefficients instead of the weights saves a pass over the chunk.
            chunk_coefficients = coefficients[start:stop].div_(chunk_moments[:, :, 0].unsqueeze(1))
            torch.bmm(chunk_coefficients, weights, out=contractions[start:stop])
    grad_features = None
    if need_features:
        grad_features = torch.addcmul(contractions[:, 0], contractions[:, 1], centred.reshape(rows, p))
        grad_features = grad_features.view(n, d, p)
    grad_embeddings = None
    if need_embeddings:
        variance = moments[..., 1].div_(moments[..., 0]).sub_(centred_output.square())  # [rows, K]
        grad_embeddings = (variance.mul_(grad)).view(n, d, k).sum(dim=0).t()
    return grad_features, grad_embeddings


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
