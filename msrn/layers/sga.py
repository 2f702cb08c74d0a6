"""Semantic guided attention: label/group-specific pooling of a feature map (paper eq. 7-9)."""

import torch
import torch.nn as nn

from ._sga_function import _DEFAULT_CHUNK_ELEMENTS, semantic_guided_attention_chunked

__all__ = ["SemanticGuidedAttention", "semantic_guided_attention"]


def _check_shapes(features: torch.Tensor, embeddings: torch.Tensor) -> None:
    if features.dim() != 4:
        raise ValueError(f"SGA expects features [N, d, H, W], got {list(features.shape)}.")
    if embeddings.dim() != 2 or embeddings.shape[1] != features.shape[1]:
        raise ValueError(
            f"SGA expects embeddings [K, {features.shape[1]}] to match the feature width d="
            f"{features.shape[1]}, got {list(embeddings.shape)}."
        )


def semantic_guided_attention(features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    r"""Eq. 7-9 computed literally (materialises ``N * K * d * H * W`` scores).

    .. math::
        s_{p,k,c} = f_{p,c}\, e_{k,c}                                   && \text{(eq. 7)} \\
        a_{p,k,c} = \frac{\exp s_{p,k,c}}{\sum_{p'} \exp s_{p',k,c}}    && \text{(eq. 8)} \\
        o_{k,c} = \sum_p a_{p,k,c}\, f_{p,c}                            && \text{(eq. 9)}

    over the ``P = H * W`` positions ``p``, embedding rows ``k`` and channels ``c``. No scaling and no
    normalisation besides the softmax over positions.

    Args:
        features: ``[N, d, H, W]`` feature map of one branch.
        embeddings: ``[K, d]`` label and/or group embeddings.

    Returns:
        ``[N, K, d]`` semantic representations.
    """
    _check_shapes(features, embeddings)
    f = features.flatten(2).unsqueeze(1)  # [N, 1, d, P]
    scores = f * embeddings.to(f.dtype)[None, :, :, None]  # [N, K, d, P]
    attention = torch.softmax(scores, dim=-1)
    return (attention * f).sum(dim=-1)


class SemanticGuidedAttention(nn.Module):
    r"""Semantic guided attention (SGA, paper section 3.3, eq. 7-9).

    Every embedding row ``k`` (a label or a group) and every channel ``c`` gets its own softmax over
    the positions of the feature map, driven by the Hadamard product of the position's feature and
    the embedding; the output is the attention-weighted sum of the features (see
    :func:`semantic_guided_attention` for the formulas). The module has no parameters.

    By default the attention weights never exist in full: they are computed for a few thousand
    ``(sample, channel)`` rows at a time, in the forward pass and again in the backward pass, which
    uses the closed-form gradients of docs/design.md section 4. Memory stays at the size of the inputs and
    outputs, and on CPU it is also several times faster than the literal formula. Half-precision
    inputs (e.g. under ``torch.autocast``) are computed in float32 and returned in their own dtype,
    since the unscaled scores ``f * e`` overflow bfloat16/float16 exponentials easily.

    Args:
        memory_efficient: use the chunked computation (``False``: the literal formula, which keeps the
            ``[N, K, d, H*W]`` weights for autograd).
        chunk_elements: attention weights computed at once by the chunked computation.

    Shapes:
        - features: ``[N, d, H, W]``
        - embeddings: ``[K, d]``
        - output: ``[N, K, d]``
    """

    def __init__(self, memory_efficient: bool = True, chunk_elements: int = _DEFAULT_CHUNK_ELEMENTS) -> None:
        super().__init__()
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be a positive number of values, got {chunk_elements}.")
        self.memory_efficient = memory_efficient
        self.chunk_elements = chunk_elements

    def forward(self, features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        if not self.memory_efficient:
            return semantic_guided_attention(features, embeddings)
        _check_shapes(features, embeddings)
        compute_dtype = torch.promote_types(features.dtype, torch.float32)
        with torch.autocast(features.device.type, enabled=False):
            output = semantic_guided_attention_chunked(
                features.to(compute_dtype), embeddings.to(compute_dtype), self.chunk_elements
            )
        return output.to(features.dtype)

    def extra_repr(self) -> str:
        return f"memory_efficient={self.memory_efficient}, chunk_elements={self.chunk_elements}"

    @torch.no_grad()
    def attention_maps(self, features: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """Eq. 8 weights averaged over channels: ``[N, K, H, W]``, each map sums to one."""
        _check_shapes(features, embeddings)
        n, d, h, w = features.shape
        f = features.flatten(2)
        maps = features.new_zeros(n, embeddings.shape[0], h * w)
        for k in range(embeddings.shape[0]):  # one row at a time keeps memory at N * d * P
            maps[:, k] = torch.softmax(f * embeddings[k].to(f.dtype)[None, :, None], dim=-1).mean(dim=1)
        return maps.view(n, -1, h, w)
