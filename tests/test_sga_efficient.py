"""The memory-efficient semantic guided attention against eq. 7-9 written out here (values, gradients,
gradcheck, autocast, what autograd keeps)."""

import pytest
import torch

from msrn.layers import SemanticGuidedAttention, semantic_guided_attention
from msrn.layers._sga_function import semantic_guided_attention_chunked


def literal_sga(features, embeddings):
    """Eq. 7-9 one embedding row at a time, with explicit exponentials (differentiable, any dtype)."""
    n, d, h, w = features.shape
    f = features.reshape(n, d, h * w)
    rows = []
    for k in range(embeddings.shape[0]):
        scores = f * embeddings[k][None, :, None]  # eq. 7
        exps = torch.exp(scores - scores.max(dim=2, keepdim=True).values)
        weights = exps / exps.sum(dim=2, keepdim=True)  # eq. 8
        rows.append((weights * f).sum(dim=2))  # eq. 9
    return torch.stack(rows, dim=1)


def relative_error(actual, expected):
    scale = max(expected.double().norm().item(), 1e-12)  # a 1x1 map has zero gradient for e
    return (actual.double() - expected.double()).norm().item() / scale


def reference_with_grads(features, embeddings, grad_output):
    f = features.detach().double().requires_grad_()
    e = embeddings.detach().double().requires_grad_()
    out = literal_sga(f, e)
    grad_f, grad_e = torch.autograd.grad(out, (f, e), grad_output.double())
    return out.detach(), grad_f, grad_e


# (N, d, H, W, K, chunk_elements): chunks that split a sample, span samples, hold one row, hold everything.
CASES = [
    (2, 16, 7, 7, 9, 300),
    (3, 8, 5, 4, 6, 1),
    (2, 12, 6, 3, 5, 1 << 19),
    (1, 5, 1, 1, 3, 7),
    (4, 32, 14, 14, 24, 20000),
]


@pytest.mark.parametrize("n, d, h, w, k, chunk", CASES)
def test_values_and_gradients_match_eq_7_9_in_fp32(n, d, h, w, k, chunk):
    features = torch.randn(n, d, h, w) * 2.0
    embeddings = torch.randn(k, d) * 1.5
    grad_output = torch.randn(n, k, d)
    expected, expected_grad_f, expected_grad_e = reference_with_grads(features, embeddings, grad_output)

    f = features.clone().requires_grad_()
    e = embeddings.clone().requires_grad_()
    out = semantic_guided_attention_chunked(f, e, chunk)
    assert out.shape == (n, k, d) and out.dtype == torch.float32
    grad_f, grad_e = torch.autograd.grad(out, (f, e), grad_output)
    assert relative_error(out, expected) < 1e-5
    assert relative_error(grad_f, expected_grad_f) < 1e-5
    assert relative_error(grad_e, expected_grad_e) < 1e-5
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_module_matches_the_literal_formula_and_its_autograd():
    features = torch.randn(2, 24, 9, 9)
    embeddings = torch.randn(10, 24)
    grad_output = torch.randn(2, 10, 24)
    results = []
    for module in (SemanticGuidedAttention(), SemanticGuidedAttention(memory_efficient=False)):
        f = features.clone().requires_grad_()
        e = embeddings.clone().requires_grad_()
        out = module(f, e)
        out.backward(grad_output)
        results.append((out.detach(), f.grad, e.grad))
    for ours, naive in zip(*results, strict=True):
        assert relative_error(ours, naive) < 1e-5
    torch.testing.assert_close(results[1][0], semantic_guided_attention(features, embeddings))


def test_extreme_embeddings_stay_finite():
    """Scores of +-1e3 overflow a plain exponential; the closed-form maximum keeps them finite."""
    features = torch.randn(2, 6, 4, 4) * 3.0
    embeddings = torch.tensor([[300.0] * 6, [-300.0] * 6, [0.0] * 6])
    f = features.clone().requires_grad_()
    out = semantic_guided_attention_chunked(f, embeddings, 50)
    flat = features.flatten(2)
    torch.testing.assert_close(out[:, 0], flat.amax(dim=2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 1], flat.amin(dim=2), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[:, 2], flat.mean(dim=2))
    out.sum().backward()
    assert torch.isfinite(f.grad).all()


@pytest.mark.parametrize("chunk", [1, 13, 10_000])
def test_gradcheck_float64(chunk):
    features = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    embeddings = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda f, e: semantic_guided_attention_chunked(f, e, chunk), (features, embeddings)
    )


@pytest.mark.parametrize("needs", [(True, False), (False, True)])
def test_gradcheck_one_input(needs):
    features = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=needs[0])
    embeddings = torch.randn(3, 4, dtype=torch.float64, requires_grad=needs[1])
    assert torch.autograd.gradcheck(
        lambda f, e: SemanticGuidedAttention(chunk_elements=20)(f, e), (features, embeddings)
    )


def test_double_backward_is_refused():
    f = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    e = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    out = SemanticGuidedAttention()(f, e)
    grad_output = torch.ones_like(out, requires_grad=True)
    (grad_f,) = torch.autograd.grad(out, f, grad_output, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad_f.sum().backward()


def test_autocast_bfloat16_is_close_and_keeps_the_input_dtype():
    conv = torch.nn.Conv2d(8, 16, kernel_size=1)
    images = torch.randn(2, 8, 7, 7)
    embeddings = torch.randn(6, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = conv(images)
        assert features.dtype == torch.bfloat16
        out = SemanticGuidedAttention()(features, embeddings)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    # The same bf16-rounded features and the fp32 embeddings through the literal formula in float64.
    expected = literal_sga(features.detach().double(), embeddings.detach().double())
    assert relative_error(out, expected) < 1e-2
    e = embeddings.detach().double().requires_grad_()
    literal_sga(features.detach().double(), e).sum().backward()
    assert relative_error(embeddings.grad, e.grad) < 2e-2
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_bfloat16_inputs_are_computed_in_float32():
    features = torch.randn(2, 8, 6, 6).bfloat16()
    embeddings = (torch.randn(5, 8) * 4).bfloat16()
    out = SemanticGuidedAttention()(features, embeddings)
    assert out.dtype == torch.bfloat16
    expected = literal_sga(features.double(), embeddings.double())
    # Only the final rounding to bfloat16 (8 bits of mantissa) separates the two.
    torch.testing.assert_close(out.double(), expected, rtol=8e-3, atol=1e-3)


def test_inference_path_matches_training_path_and_builds_no_graph():
    features = torch.randn(2, 16, 8, 8, requires_grad=True)
    embeddings = torch.randn(7, 16, requires_grad=True)
    module = SemanticGuidedAttention(chunk_elements=500)
    with torch.no_grad():
        inferred = module(features, embeddings)
    assert not inferred.requires_grad
    trained = module(features, embeddings)
    assert trained.grad_fn is not None
    torch.testing.assert_close(inferred, trained.detach(), rtol=0, atol=0)


def saved_tensor_sizes(fn, *inputs):
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn(*inputs)
    return sizes


def test_autograd_keeps_nothing_of_attention_size():
    n, d, h, w, k = 2, 16, 10, 10, 12
    features = torch.randn(n, d, h, w, requires_grad=True)
    embeddings = torch.randn(k, d, requires_grad=True)
    attention_size = n * k * d * h * w
    ours = saved_tensor_sizes(SemanticGuidedAttention(), features, embeddings)
    assert max(ours) <= max(features.numel(), n * k * d)
    # The output and two [N, d, K] statistics of the softmax (denominator, weighted variance).
    assert sum(ours) <= features.numel() + embeddings.numel() + 3 * n * k * d
    naive = saved_tensor_sizes(SemanticGuidedAttention(memory_efficient=False), features, embeddings)
    assert max(naive) >= attention_size  # the literal formula keeps the weights


def test_input_errors():
    with pytest.raises(ValueError, match=r"\[K, 6\]"):
        SemanticGuidedAttention()(torch.randn(1, 6, 2, 2), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"\[N, d, H, W\]"):
        SemanticGuidedAttention()(torch.randn(6, 2, 2), torch.randn(3, 6))
    with pytest.raises(ValueError, match="chunk_elements"):
        SemanticGuidedAttention(chunk_elements=0)
