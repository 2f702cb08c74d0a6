"""Any timm model with feature maps as the MSRN trunk: CNNs, hierarchical and plain transformers."""

import pytest
import timm
import torch
import torch.nn as nn

import msrn
from msrn.layers import MultiBranchBackbone

SMALL = dict(embed_dim=16, hidden_dim=32, gat_hidden_dim=12, label_feature_dim=10)

# One tiny member of each family, with the input size it is built for (transformers with a fixed
# input size are built for the small test size through img_size).
FAMILIES = {
    "resnet18": (64, {}),
    "convnext_atto": (64, {}),
    "efficientnet_b0": (64, {}),
    "regnetx_002": (64, {}),
    "vit_tiny_patch16_224": (64, dict(img_size=64)),
    "deit_tiny_patch16_224": (64, dict(img_size=64)),
    "swin_tiny_patch4_window7_224": (64, dict(img_size=64)),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_builds_and_trains_a_step(name):
    size, backbone_kwargs = FAMILIES[name]
    model = timm.create_model(
        "msrn_custom", backbone=name, num_classes=4, backbone_kwargs=backbone_kwargs, **SMALL
    )
    x, targets = torch.randn(2, 3, size, size), torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    assert model.forward_features(x).shape == (2, 4 + model.num_groups, 3 * 16)
    criterion = msrn.MSRNLoss(model)
    optimizer = torch.optim.SGD(msrn.param_groups(model, lr=0.1, backbone_lr_scale=0.1), lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = criterion(model(x), targets)
    optimizer.zero_grad()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad}"
    optimizer.step()
    assert torch.isfinite(loss)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("backbone.trunk.") for n in changed) and "head.fc2.weight" in changed


def test_swin_channels_last_maps_become_nchw():
    backbone = MultiBranchBackbone("swin_tiny_patch4_window7_224", embed_dim=8, img_size=64).eval()
    assert backbone.channels_last_output
    x = torch.randn(1, 3, 64, 64)
    stages = backbone.forward_stages(x)
    assert [tuple(s.shape) for s in stages] == [(1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]
    torch.testing.assert_close(stages[-1], backbone.trunk(x)[-1].permute(0, 3, 1, 2))
    assert [tuple(o.shape) for o in backbone(x)] == [(1, 8, 4, 4), (1, 8, 2, 2), (1, 8, 1, 1)]


def test_vit_branches_are_its_last_blocks_on_the_patch_grid():
    backbone = MultiBranchBackbone("vit_tiny_patch16_224", embed_dim=8, img_size=64).eval()
    assert tuple(backbone.trunk.feature_info.out_indices) == (9, 10, 11)
    assert backbone.stage_channels == [192] * 3 and backbone.branch_strides == [32] * 3
    x = torch.randn(1, 3, 64, 64)
    tokens = backbone.trunk.model.forward_intermediates(x, indices=[11], intermediates_only=True)[0]
    torch.testing.assert_close(backbone.forward_stages(x)[-1], tokens)
    assert [tuple(o.shape) for o in backbone(x)] == [(1, 8, 2, 2)] * 3


def test_out_indices_pick_other_blocks_or_stages():
    vit = MultiBranchBackbone("vit_tiny_patch16_224", embed_dim=8, img_size=64, out_indices=(3, 7, -1))
    assert tuple(vit.trunk.feature_info.out_indices) == (3, 7, 11)
    model = timm.create_model(
        "msrn_custom",
        backbone="resnet18",
        num_classes=3,
        num_branches=2,
        backbone_kwargs=dict(out_indices=(2, 4)),
        **SMALL,
    )
    assert model.backbone.stage_channels == [128, 512]
    with pytest.raises(ValueError, match="names 2 feature maps but num_branches=3"):
        MultiBranchBackbone("resnet18", out_indices=(2, 3))
    with pytest.raises(ValueError, match="distinct, increasing indices into the 5 feature maps"):
        MultiBranchBackbone("resnet18", num_branches=2, out_indices=(3, 5))
    with pytest.raises(ValueError, match="distinct, increasing"):
        MultiBranchBackbone("resnet18", num_branches=2, out_indices=(4, 2))


def test_fixed_input_size_error_says_how_to_fix_it():
    backbone = MultiBranchBackbone("vit_tiny_patch16_224", embed_dim=8, img_size=64)
    assert backbone.fixed_input_size == (64, 64)
    with pytest.raises(ValueError, match=r"built for 64x64 inputs, got 96x96.*img_size=96"):
        backbone(torch.randn(1, 3, 96, 96))
    dynamic = MultiBranchBackbone("vit_tiny_patch16_224", embed_dim=8, dynamic_img_size=True)
    assert dynamic.fixed_input_size is None
    assert [tuple(o.shape) for o in dynamic(torch.randn(1, 3, 96, 64))] == [(1, 8, 3, 2)] * 3
    assert MultiBranchBackbone("resnet18", embed_dim=8).fixed_input_size is None


def test_vit_grad_checkpointing_gives_the_same_gradients():
    backbone = MultiBranchBackbone("vit_tiny_patch16_224", embed_dim=8, img_size=32)
    x = torch.randn(2, 3, 32, 32)
    sum(o.sum() for o in backbone(x)).backward()
    reference = backbone.trunk.model.blocks[0].attn.qkv.weight.grad.clone()
    backbone.zero_grad()
    backbone.set_grad_checkpointing(True)
    assert backbone.trunk.model.grad_checkpointing
    sum(o.sum() for o in backbone(x)).backward()
    torch.testing.assert_close(backbone.trunk.model.blocks[0].attn.qkv.weight.grad, reference)


def test_a_model_without_feature_maps_is_refused_clearly():
    @timm.models.register_model
    def _msrn_test_flat_net(pretrained=False, **kwargs):
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))

    with pytest.raises(ValueError, match="cannot serve as an MSRN backbone.*features_only=True"):
        MultiBranchBackbone("_msrn_test_flat_net")
    with pytest.raises(ValueError, match=r"with backbone_kwargs=\{'no_such_argument': 1\}"):
        MultiBranchBackbone("resnet18", no_such_argument=1)
