"""Each equation of the LGE/SGA modules against a direct computation written here (paper eq. 2-9)."""

import math

import pytest
import torch
import torch.nn.functional as F

from msrn.layers import (
    DiffPool,
    GATLayer,
    LabelGroupEmbedding,
    MultiBranchBackbone,
    SemanticGuidedAttention,
    SemanticHead,
    compactness_loss,
)


def reference_gat(x, weight, att_self, att_neighbor, mask):
    """Eq. 2-3 node by node, with explicit neighbourhood lists."""
    h = x @ weight.T
    out = []
    for i in range(x.shape[0]):
        neighbours = [j for j in range(x.shape[0]) if mask[i, j] or i == j]
        logits = torch.stack([F.leaky_relu(att_self @ h[i] + att_neighbor @ h[j], 0.2) for j in neighbours])
        alpha = torch.exp(logits) / torch.exp(logits).sum()
        out.append(F.elu(sum(a * h[j] for a, j in zip(alpha, neighbours, strict=True)) + h[i]))
    return torch.stack(out)


def random_mask(n, p=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=g) < p


class TestGAT:
    def test_matches_eq_2_3(self):
        layer = GATLayer(7, 5)
        x = torch.randn(6, 7)
        mask = random_mask(6)
        expected = reference_gat(x, layer.weight, layer.att_self, layer.att_neighbor, mask)
        torch.testing.assert_close(layer(x, mask), expected, rtol=1e-5, atol=1e-6)

    def test_self_loops_always_on(self):
        layer = GATLayer(4, 3)
        x = torch.randn(5, 4)
        empty = torch.zeros(5, 5, dtype=torch.bool)
        h = x @ layer.weight.T
        # With only the self-loop, alpha_ii = 1 and eq. 3 gives ELU(2 h_i).
        torch.testing.assert_close(layer(x, empty), F.elu(2 * h))
        torch.testing.assert_close(layer.attention(x, empty), torch.eye(5))

    def test_non_neighbour_features_do_not_reach_a_node(self):
        layer = GATLayer(4, 4)
        mask = torch.zeros(5, 5, dtype=torch.bool)
        mask[0, 1] = True  # node 0 attends to node 1 only
        mask[3, 0] = True  # node 3 attends to node 0 (does not make 3 a neighbour of 0)
        x = torch.randn(5, 4)
        before = layer(x, mask)
        changed = x.clone()
        changed[2] += 10.0
        changed[3] -= 7.0
        after = layer(changed, mask)
        torch.testing.assert_close(after[0], before[0])
        torch.testing.assert_close(after[1], before[1])
        assert not torch.allclose(after[3], before[3])
        changed[1] += 1.0
        assert not torch.allclose(layer(changed, mask)[0], before[0])

    def test_init_bounds(self):
        layer = GATLayer(300, 512)
        w_bound = 1.414 * math.sqrt(6.0 / (300 + 512))
        a_bound = 1.414 * math.sqrt(6.0 / (2 * 512 + 1))
        assert layer.weight.abs().max() <= w_bound
        assert max(layer.att_self.abs().max(), layer.att_neighbor.abs().max()) <= a_bound

    def test_bad_shapes(self):
        layer = GATLayer(4, 3)
        with pytest.raises(ValueError, match=r"\[n, 4\]"):
            layer(torch.randn(5, 3), torch.zeros(5, 5, dtype=torch.bool))
        with pytest.raises(ValueError, match=r"mask must be \[5, 5\]"):
            layer(torch.randn(5, 4), torch.zeros(4, 4, dtype=torch.bool))


class TestDiffPool:
    def test_matches_eq_5(self):
        pool = DiffPool(8, 3)
        x = torch.randn(6, 8)
        mask = random_mask(6, seed=1)
        z = reference_gat(x, pool.embed.weight, pool.embed.att_self, pool.embed.att_neighbor, mask)
        s_logits = reference_gat(x, pool.assign.weight, pool.assign.att_self, pool.assign.att_neighbor, mask)
        s = torch.exp(s_logits) / torch.exp(s_logits).sum(dim=1, keepdim=True)
        groups, assignment = pool(x, mask)
        torch.testing.assert_close(assignment, s, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(groups, s.T @ z, rtol=1e-5, atol=1e-5)
        assert groups.shape == (3, 8) and assignment.shape == (6, 3)

    @pytest.mark.parametrize("squared", [True, False])
    def test_compactness_loss_eq_6(self, squared):
        labels = torch.randn(7, 5)
        groups = torch.randn(3, 5)
        assignment = torch.softmax(torch.randn(7, 3), dim=1)
        expected = 0.0
        for i in range(7):
            k = int(assignment[i].argmax())
            distance = torch.linalg.norm(labels[i] - groups[k])
            expected = expected + (distance**2 if squared else distance)
        torch.testing.assert_close(compactness_loss(labels, groups, assignment, squared=squared), expected)
        torch.testing.assert_close(DiffPool.compactness_loss(labels, groups, assignment, squared), expected)

    def test_plain_distance_has_finite_gradient_at_zero(self):
        labels = torch.zeros(2, 3, requires_grad=True)
        groups = torch.zeros(1, 3, requires_grad=True)
        compactness_loss(labels, groups, torch.ones(2, 1), squared=False).backward()
        assert torch.isfinite(labels.grad).all() and torch.isfinite(groups.grad).all()

    def test_rejects_zero_groups(self):
        with pytest.raises(ValueError, match="num_groups"):
            DiffPool(4, 0)


class TestLabelGroupEmbedding:
    def test_composition_and_relu_before_diffpool(self):
        lge = LabelGroupEmbedding(6, gat_dims=(5, 8), num_groups=2, input_proj_dim=4)
        v = torch.randn(5, 6)
        mask = random_mask(5, seed=2)
        x = lge.input_proj(v)
        for gat in lge.gats:
            x = reference_gat(x, gat.weight, gat.att_self, gat.att_neighbor, mask)
        expected_groups, expected_assignment = lge.diffpool(F.relu(x), mask)
        labels, groups, assignment = lge(v, mask)
        torch.testing.assert_close(labels, x, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(groups, expected_groups)
        torch.testing.assert_close(assignment, expected_assignment)
        assert (labels < 0).any(), "E_l is the ELU output and is used as is (it can be negative)"

    def test_without_groups(self):
        lge = LabelGroupEmbedding(6, gat_dims=(5, 8), num_groups=0)
        labels, groups, assignment = lge(torch.randn(4, 6), torch.eye(4, dtype=torch.bool))
        assert labels.shape == (4, 8) and groups is None and assignment is None


def reference_sga(features, embeddings):
    """Eq. 7-9 with explicit exponentials and sums over positions (float64)."""
    n, d, h, w = features.shape
    f = features.double().reshape(n, d, h * w)
    out = torch.empty(n, embeddings.shape[0], d, dtype=torch.float64)
    for k in range(embeddings.shape[0]):
        s = f * embeddings[k].double()[None, :, None]
        a = torch.exp(s - s.max(dim=2, keepdim=True).values)
        a = a / a.sum(dim=2, keepdim=True)
        out[:, k] = (a * f).sum(dim=2)
    return out


class TestSGA:
    def test_matches_eq_7_9(self):
        features = torch.randn(2, 6, 5, 4)
        embeddings = torch.randn(3, 6)
        out = SemanticGuidedAttention()(features, embeddings)
        assert out.shape == (2, 3, 6)
        torch.testing.assert_close(out.double(), reference_sga(features, embeddings), rtol=1e-5, atol=1e-6)

    def test_zero_embedding_is_average_pooling(self):
        features = torch.randn(2, 4, 3, 3)
        out = SemanticGuidedAttention()(features, torch.zeros(1, 4))
        torch.testing.assert_close(out[:, 0], features.mean(dim=(2, 3)))

    def test_large_embedding_tends_to_max_pooling(self):
        features = torch.randn(2, 4, 3, 3)
        out = SemanticGuidedAttention()(features, torch.full((1, 4), 200.0))
        torch.testing.assert_close(out[:, 0], features.amax(dim=(2, 3)), rtol=1e-3, atol=1e-3)

    def test_attention_maps_are_channel_means_of_eq_8(self):
        features = torch.randn(2, 4, 3, 5)
        embeddings = torch.randn(2, 4)
        maps = SemanticGuidedAttention().attention_maps(features, embeddings)
        assert maps.shape == (2, 2, 3, 5)
        f = features.flatten(2)
        expected = torch.softmax(f[:, None] * embeddings[None, :, :, None], dim=-1).mean(dim=2)
        torch.testing.assert_close(maps.flatten(2), expected)
        torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 2))

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match=r"\[K, 6\]"):
            SemanticGuidedAttention()(torch.randn(1, 6, 2, 2), torch.randn(3, 5))


class TestSemanticHead:
    def test_flattening_order_and_formula(self):
        num_rows, branches, d, classes = 3, 2, 4, 5
        head = SemanticHead(num_rows, branches * d, classes, hidden_dim=7)
        m = torch.randn(2, num_rows, branches * d)
        flat = torch.empty(2, num_rows * branches * d)
        for k in range(num_rows):
            for b in range(branches):
                for c in range(d):
                    flat[:, k * branches * d + b * d + c] = m[:, k, b * d + c]
        hidden = F.leaky_relu(torch.tanh(flat) @ head.fc1.weight.T + head.fc1.bias, 0.01)
        torch.testing.assert_close(head(m, pre_logits=True), hidden)
        torch.testing.assert_close(head(m), hidden @ head.fc2.weight.T + head.fc2.bias)


class TestMultiBranchBackbone:
    def test_resnet_branches(self):
        backbone = MultiBranchBackbone("resnet18", num_branches=3, embed_dim=16)
        assert backbone.stage_channels == [128, 256, 512]
        assert [type(m).__name__ for m in backbone.buffer_convs] == ["Conv2d", "Conv2d", "Identity"]
        outs = backbone(torch.randn(2, 3, 128, 128))
        assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 8), (2, 16, 4, 4), (2, 16, 2, 2)]

    def test_order_buffer_pool_projection_and_unbuffered_trunk(self):
        backbone = MultiBranchBackbone("resnet18", num_branches=2, embed_dim=8).eval()
        x = torch.randn(1, 3, 96, 96)
        stages = backbone.trunk(x)
        expected = [
            backbone.projections[0](F.max_pool2d(backbone.buffer_convs[0](stages[0]), 2, 2)),
            backbone.projections[1](F.max_pool2d(stages[1], 2, 2)),
        ]
        for out, ref in zip(backbone(x), expected, strict=True):
            torch.testing.assert_close(out, ref)

    def test_inference_pool_gives_the_max_pool_values(self):
        backbone = MultiBranchBackbone("resnet18", num_branches=3, embed_dim=8).eval()
        x = torch.randn(2, 3, 100, 132)  # odd stage sizes: the max-pool drops the last row/column
        trained = backbone(x)
        with torch.no_grad():
            inferred = backbone(x)
        for a, b in zip(inferred, trained, strict=True):
            assert torch.equal(a, b.detach())
        maps = torch.randn(2, 3, 7, 9)
        maps[0, 1, 2, 3] = float("nan")
        with torch.no_grad():
            pooled = backbone._branch_pool(maps)
        torch.testing.assert_close(pooled, F.max_pool2d(maps, 2, 2), rtol=0, atol=0, equal_nan=True)

    def test_buffer_init(self):
        backbone = MultiBranchBackbone("resnet18", num_branches=3, embed_dim=8)
        conv = backbone.buffer_convs[1]
        expected_std = math.sqrt(2.0 / conv.out_channels)
        assert abs(conv.weight.std().item() - expected_std) < 0.05 * expected_std

    @pytest.mark.parametrize("name", ["convnext_atto", "efficientnet_b0", "regnetx_002", "resnext26ts"])
    def test_other_cnns(self, name):
        backbone = MultiBranchBackbone(name, num_branches=3, embed_dim=8)
        outs = backbone(torch.randn(1, 3, 128, 128))
        assert len(outs) == 3 and all(o.shape[1] == 8 for o in outs)
        assert [o.shape[-1] for o in outs] == [128 // s for s in backbone.branch_strides]

    def test_errors(self):
        with pytest.raises(ValueError, match="not a timm model"):
            MultiBranchBackbone("resnet_does_not_exist")
        with pytest.raises(ValueError, match="only 5 feature stages"):
            MultiBranchBackbone("resnet18", num_branches=6)
        backbone = MultiBranchBackbone("resnet18", num_branches=3, embed_dim=8)
        with pytest.raises(ValueError, match="at least 64 px"):
            backbone(torch.randn(1, 3, 48, 96))
        with pytest.raises(ValueError, match="Expected 3 input channels, got 1"):
            backbone(torch.randn(1, 1, 64, 64))
