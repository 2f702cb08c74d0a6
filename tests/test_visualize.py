"""msrn.visualize: attention maps against a literal eq. 8 computation, and the Pillow pictures."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import msrn  # noqa: F401  registers the architectures
from msrn import visualize

TINY = dict(num_classes=3, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return timm.create_model("msrn_resnet18", **TINY).eval()


def _reference_maps(features: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Eq. 7-8 with explicit loops over labels and channels, then the channel mean: [N, K, H, W]."""
    n, d, h, w = features.shape
    out = torch.zeros(n, queries.shape[0], h, w, dtype=torch.float64)
    for k in range(queries.shape[0]):
        for c in range(d):
            scores = features[:, c].double() * float(queries[k, c])  # [N, H, W]
            weights = torch.exp(scores - scores.amax(dim=(1, 2), keepdim=True))
            out[:, k] += weights / weights.sum(dim=(1, 2), keepdim=True)
    return out / d


def test_label_attention_maps_match_eq8(model):
    images = torch.randn(2, 3, 128, 128)
    maps = visualize.label_attention_maps(model, images)
    with torch.no_grad():
        branches = model.forward_branches(images)
        label_rows = model.label_group_embeddings()[0]  # E_l [n, d]
    assert len(maps) == model.num_branches == 3
    for got, features in zip(maps, branches, strict=True):
        assert got.shape == (2, TINY["num_classes"], *features.shape[-2:])
        expected = _reference_maps(features, label_rows)
        torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got.sum(dim=(2, 3)), torch.ones(2, TINY["num_classes"]), atol=1e-5, rtol=0)
    # shallow branches are finer: strides 16, 32, 64 at 128 px
    assert [m.shape[-1] for m in maps] == [8, 4, 2]


def test_group_only_model_has_no_label_maps():
    group_only = timm.create_model("msrn_resnet18", embeddings="group", **TINY).eval()
    with pytest.raises(ValueError, match="group embeddings only"):
        visualize.label_attention_maps(group_only, torch.randn(1, 3, 64, 64))


def test_resize_maps_shape_and_constant_maps():
    maps = [torch.full((1, 2, 4, 4), 0.25), torch.full((1, 2, 2, 2), 0.5)]
    resized = visualize.resize_maps(maps, (16, 12))
    assert resized.shape == (1, 2, 2, 16, 12)
    torch.testing.assert_close(resized[:, :, 0], torch.full((1, 2, 16, 12), 0.25))
    torch.testing.assert_close(resized[:, :, 1], torch.full((1, 2, 16, 12), 0.5))


def test_heatmap_colors_ends_and_midpoint():
    heat = np.array([[0.0, 1.0], [2.0, 4.0]])
    colors = visualize.heatmap_colors(heat)
    assert colors.shape == (2, 2, 3) and colors.dtype == np.uint8
    assert colors[0, 0].tolist() == [0, 0, 96]  # minimum: first ramp colour
    assert colors[1, 1].tolist() == [220, 0, 0]  # maximum: last ramp colour
    assert colors[1, 0].tolist() == [0, 220, 220]  # halfway: the middle anchor
    # a flat map has no maximum to show: all at the low end
    assert (visualize.heatmap_colors(np.ones((3, 3))) == np.array([0, 0, 96])).all()
    with pytest.raises(ValueError, match="2-D"):
        visualize.heatmap_colors(np.ones((2, 2, 2)))


def test_overlay_alpha_extremes():
    image = Image.fromarray(np.full((6, 8, 3), 100, dtype=np.uint8))
    heat = np.zeros((3, 4))
    heat[0, 0] = 1.0
    assert np.array_equal(np.asarray(visualize.overlay_heatmap(image, heat, alpha=0.0)), np.asarray(image))
    full = np.asarray(visualize.overlay_heatmap(image, heat, alpha=1.0))
    assert full.shape == (6, 8, 3)
    assert full[5, 7].tolist() == [0, 0, 96]  # far from the peak: the low colour
    with pytest.raises(ValueError, match="alpha"):
        visualize.overlay_heatmap(image, heat, alpha=1.5)


def test_tensor_to_image_inverts_normalisation():
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    tensor = (
        torch.from_numpy(pixels).permute(2, 0, 1).float() / 255 - torch.tensor(mean)[:, None, None]
    ) / torch.tensor(std)[:, None, None]
    assert np.array_equal(np.asarray(visualize.tensor_to_image(tensor, mean, std)), pixels)


def test_attention_grid_layout_and_cells():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 80, 3), dtype=np.uint8))
    maps = np.random.default_rng(2).random((2, 3, 5, 5))
    grid = visualize.attention_grid(
        image, maps, ["a 0.90", "b 0.70"], ["x", "y", "z"], cell_size=50, alpha=0.6
    )
    cell_w, cell_h, text_h, pad = 100, 50, 12, 4  # width follows the 2:1 aspect ratio
    assert grid.size == (4 * (cell_w + pad) + pad, text_h + 2 * (text_h + cell_h + pad) + pad)
    base = image.resize((cell_w, cell_h), Image.BILINEAR)
    # second row, third column (branch 1): exactly the overlay of that map on the resized image
    top, left = text_h + (text_h + cell_h + pad) + text_h, pad + 2 * (cell_w + pad)
    cell = grid.crop((left, top, left + cell_w, top + cell_h))
    expected = visualize.overlay_heatmap(base, maps[1, 1], alpha=0.6)
    assert np.array_equal(np.asarray(cell), np.asarray(expected))
    first = grid.crop((pad, text_h + text_h, pad + cell_w, text_h + text_h + cell_h))
    assert np.array_equal(np.asarray(first), np.asarray(base))
    with pytest.raises(ValueError, match="titles"):
        visualize.attention_grid(image, maps, ["only one"])


def test_branch_names(model):
    assert visualize.branch_names(model) == ["layer2 /16", "layer3 /32", "layer4 /64"]
