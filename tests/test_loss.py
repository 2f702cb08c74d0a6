"""MSRNLoss: the BCE / ASL / focal choice, checked against timm and torchvision, and the ignore mask."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from timm.loss import AsymmetricLossMultiLabel
from torchvision.ops import sigmoid_focal_loss

import msrn
from msrn.engine import TrainConfig
from msrn.engine.resume import check_resume_changes
from msrn.loss import LOSSES, MSRNLoss


def _batch(seed: int = 0, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=generator) * scale
    targets = (torch.rand(6, 5, generator=generator) > 0.6).float()
    return logits, targets


def _timm_asl_sum(**kwargs):
    """timm's ASL summed over all entries (recent timm averages over the batch by default)."""
    if "reduction" in inspect.signature(AsymmetricLossMultiLabel).parameters:
        kwargs["reduction"] = "sum"
    return AsymmetricLossMultiLabel(**kwargs)


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [(4, 1, 0.05), (2, 0, 0.0), (0, 0, 0.2), (3, 2, 0.1)])
def test_asl_matches_timm_summed_vs_averaged(gamma_neg, gamma_pos, clip):
    logits, targets = _batch()
    ours = MSRNLoss(loss="asl", asl_gamma_neg=gamma_neg, asl_gamma_pos=gamma_pos, asl_clip=clip)
    timm_sum = _timm_asl_sum(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip)(logits, targets)
    # timm sums the elements; MSRNLoss averages them over the N * n kept entries
    torch.testing.assert_close(ours(logits, targets) * logits.numel(), timm_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.elementwise(logits, targets).sum(), timm_sum, rtol=1e-5, atol=1e-5)


def test_asl_gradients_match_timm():
    logits, targets = _batch(1)
    mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    (MSRNLoss(loss="asl")(mine, targets) * logits.numel()).backward()
    _timm_asl_sum()(theirs, targets).backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("gamma, alpha", [(2.0, None), (2.0, 0.25), (0.5, 0.75), (0.0, None)])
def test_focal_matches_torchvision(gamma, alpha):
    logits, targets = _batch(2)
    expected = sigmoid_focal_loss(logits, targets, alpha=-1 if alpha is None else alpha, gamma=gamma)
    ours = MSRNLoss(loss="focal", focal_gamma=gamma, focal_alpha=alpha)
    torch.testing.assert_close(ours.elementwise(logits, targets), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours(logits, targets), expected.mean(), rtol=1e-5, atol=1e-6)


def test_default_is_the_papers_bce_and_focal_without_focusing_is_bce():
    logits, targets = _batch(3)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert MSRNLoss().loss == "bce"
    torch.testing.assert_close(MSRNLoss()(logits, targets), bce)
    torch.testing.assert_close(MSRNLoss(loss="focal", focal_gamma=0)(logits, targets), bce)
    no_focus = MSRNLoss(loss="asl", asl_gamma_neg=0, asl_gamma_pos=0, asl_clip=0)
    torch.testing.assert_close(no_focus(logits, targets), bce)


@pytest.mark.parametrize("loss", LOSSES)
def test_ignore_mask_is_a_mean_over_the_kept_entries_without_their_gradient(loss):
    logits, targets = _batch(4)
    ignore = torch.rand(logits.shape, generator=torch.Generator().manual_seed(5)) > 0.7
    criterion = MSRNLoss(loss=loss)
    leaf = logits.clone().requires_grad_()
    value = criterion(leaf, targets, ignore=ignore)
    expected = criterion.elementwise(logits, targets)[~ignore].mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    reference = logits.clone().requires_grad_()
    criterion.elementwise(reference, targets)[~ignore].mean().backward()
    assert torch.all(leaf.grad[ignore] == 0) and leaf.grad.abs().sum() > 0
    torch.testing.assert_close(leaf.grad, reference.grad)
    # what an ignored entry holds does not matter, whatever its logit or target
    changed_logits = torch.where(ignore, torch.full_like(logits, 50.0), logits)
    torch.testing.assert_close(criterion(changed_logits, torch.where(ignore, 1.0, targets), ignore), value)
    # nothing ignored: the plain mean; everything ignored: 0, finite, no gradient
    torch.testing.assert_close(
        criterion(logits, targets, torch.zeros_like(ignore)), criterion(logits, targets)
    )
    leaf = logits.clone().requires_grad_()
    empty = criterion(leaf, targets, torch.ones_like(ignore))
    empty.backward()
    assert empty.item() == 0 and torch.all(leaf.grad == 0)


@pytest.mark.parametrize("loss", LOSSES)
def test_compactness_term_is_added_whatever_the_loss(loss):
    model = msrn.create_model("msrn_resnet18", num_classes=5, embed_dim=16, hidden_dim=32, gat_hidden_dim=16)
    logits, targets = _batch(6)
    ignore = torch.zeros_like(targets, dtype=torch.bool)
    ignore[0] = True
    classification = MSRNLoss(loss=loss)(logits, targets, ignore)
    total = MSRNLoss(model, loss=loss)(logits, targets, ignore)
    torch.testing.assert_close(total - classification, model.compactness_loss(weighted=True))
    weighted = MSRNLoss(model, compactness_weight=2.0, loss=loss)(logits, targets)
    torch.testing.assert_close(
        weighted - MSRNLoss(loss=loss)(logits, targets), 2.0 * model.compactness_loss(weighted=False)
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_half_precision_logits_give_a_float32_finite_loss(loss):
    logits, targets = _batch(7, scale=60.0)  # saturated sigmoids: log(0) if computed naively
    criterion = MSRNLoss(loss=loss)
    reference = criterion(logits, targets)
    for dtype in (torch.bfloat16, torch.float16):
        leaf = logits.to(dtype).requires_grad_()
        value = criterion(leaf, targets)
        value.backward()
        assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(leaf.grad).all()
        torch.testing.assert_close(value, reference, rtol=2e-2, atol=2e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = criterion(logits.to(torch.bfloat16), targets)
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_bad_loss_parameters_are_refused():
    with pytest.raises(ValueError, match="loss must be one of bce, asl, focal, got 'softmax'"):
        MSRNLoss(loss="softmax")
    with pytest.raises(ValueError, match=r"asl_clip must be in \[0, 1\)"):
        MSRNLoss(loss="asl", asl_clip=1.0)
    with pytest.raises(ValueError, match="focusing exponents must be >= 0"):
        MSRNLoss(loss="focal", focal_gamma=-1)
    with pytest.raises(ValueError, match=r"focal_alpha must be in \[0, 1\]"):
        MSRNLoss(loss="focal", focal_alpha=1.5)
    with pytest.raises(ValueError, match="ignore \\[2, 5\\] must have the logits' shape"):
        MSRNLoss()(torch.zeros(6, 5), torch.zeros(6, 5), torch.zeros(2, 5, dtype=torch.bool))


def test_trainer_options_reach_the_loss_and_cannot_change_on_resume(tmp_path):
    from msrn.cli import build_parser
    from msrn.cli.train import config_from_args
    from msrn.engine.builders import build_criterion, check_config

    args = build_parser().parse_args(
        ["train", "--loss", "asl", "--asl-gamma-neg", "3", "--asl-gamma-pos", "0", "--asl-clip", "0.1"]
    )
    config = config_from_args(args)
    criterion = build_criterion(config, None)
    assert (criterion.loss, criterion.asl_gamma_neg, criterion.asl_gamma_pos, criterion.asl_clip) == (
        "asl",
        3.0,
        0.0,
        0.1,
    )
    focal = build_criterion(TrainConfig(loss="focal", focal_gamma=1.5, focal_alpha=0.25), None)
    assert (focal.loss, focal.focal_gamma, focal.focal_alpha) == ("focal", 1.5, 0.25)
    assert TrainConfig().loss == "bce"
    with pytest.raises(ValueError, match="--asl-clip must be in"):
        check_config(TrainConfig(loss="asl", asl_clip=2.0))
    saved = TrainConfig().to_dict()
    for change in ({"loss": "asl"}, {"asl_gamma_neg": 2.0}, {"focal_alpha": 0.25}):
        with pytest.raises(ValueError, match="cannot change in the middle of a run: --(loss|asl|focal)"):
            check_resume_changes(TrainConfig, saved, change, tmp_path)


def test_loss_scale_against_bce_as_docs_training_md_states():
    """docs/training.md: on random logits ASL is 0.19x BCE (gradient 0.56x), focal 0.43x (0.92x); later
    (positives at p ~ 0.8, negatives at p ~ 0.05) ASL 0.10x (0.50x), focal 0.07x (0.44x)."""
    generator = torch.Generator().manual_seed(0)
    targets = (torch.rand(1000, 20, generator=generator) < 0.08).float()
    at_start = torch.randn(1000, 20, generator=generator)
    later = torch.where(targets > 0, torch.logit(torch.tensor(0.8)), torch.logit(torch.tensor(0.05)))
    later = later + torch.randn(1000, 20, generator=generator)
    stated = {
        "start": {"asl": (0.19, 0.56), "focal": (0.43, 0.92)},
        "later": {"asl": (0.10, 0.50), "focal": (0.07, 0.44)},
    }
    for moment, logits in (("start", at_start), ("later", later)):
        measured = {}
        for loss in LOSSES:
            leaf = logits.clone().requires_grad_()
            value = MSRNLoss(loss=loss)(leaf, targets)
            value.backward()
            measured[loss] = (value.item(), leaf.grad.norm().item())
        for loss, (value_ratio, gradient_ratio) in stated[moment].items():
            assert measured[loss][0] / measured["bce"][0] == pytest.approx(value_ratio, abs=0.01), (
                moment,
                loss,
            )
            assert measured[loss][1] / measured["bce"][1] == pytest.approx(gradient_ratio, abs=0.01), (
                moment,
                loss,
            )
