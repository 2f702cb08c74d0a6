"""The CPU twins of the GPU code paths, so that their logic is tested without a GPU: the training
epoch and the evaluation pass under bf16 autocast, channels-last and a gradient scaler (what fp16 on
CUDA uses; here a CPU scaler). Elsewhere: the inference backend under bf16 and channels-last
(tests/test_backends.py), torch.compile (tests/test_export.py), DDP (the torchrun tests, over gloo),
the GPU benchmarks (tests/test_bench.py, tests/test_gpu_check.py)."""

import numpy as np
import timm
import torch

import msrn
from msrn.engine import DistributedContext, EvalShardSampler, predict, train_one_epoch

TINY = dict(num_classes=3, embed_dim=16, hidden_dim=32, gat_hidden_dim=16, label_feature_dim=8, num_groups=2)


class _Images(torch.utils.data.Dataset):
    num_classes = 3

    def __init__(self, count: int = 4) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, 64, 64, generator=generator)
        self.targets = (torch.rand(count, 3, generator=generator) < 0.5).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], self.targets[index]


def test_training_and_evaluation_under_bf16_channels_last_and_a_gradient_scaler():
    torch.manual_seed(0)
    model = timm.create_model("msrn_resnet18", **TINY).to(memory_format=torch.channels_last)
    criterion = msrn.MSRNLoss(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    loader = torch.utils.data.DataLoader(_Images(), batch_size=2)
    context = DistributedContext(device=torch.device("cpu"))
    before = model.head.fc2.weight.detach().clone()
    stats = train_one_epoch(
        model,
        criterion,
        loader,
        optimizer,
        context,
        0,
        amp="bf16",
        scaler=scaler,
        channels_last=True,
        progress=False,
    )
    assert stats["steps"] == 2 and np.isfinite(stats["loss"])
    assert not torch.equal(model.head.fc2.weight, before)  # the scaler did step the optimizer
    assert scaler.get_scale() > 0
    evaluation = torch.utils.data.DataLoader(_Images(3), batch_size=2, sampler=EvalShardSampler(3))
    scores, targets = predict(model, evaluation, context, 3, amp="bf16", channels_last=True, progress=False)
    assert scores.shape == (3, 3) and np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
