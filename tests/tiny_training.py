"""The tiny training run the trainer tests share: a few generated images, a small model, two short
epochs. ``TINY`` holds it as ``TrainConfig`` fields, ``TINY_ARGS`` as command-line options (without
``--epochs``, which each test sets)."""

TINY = dict(
    synthetic_trainval=24,
    synthetic_test=13,
    image_size=64,
    embed_dim=32,
    hidden_dim=64,
    gat_hidden_dim=32,
    label_feature_dim=32,
    batch_size=8,
    workers=0,
    epochs=2,
    max_steps_per_epoch=2,
    progress=False,
)
TINY_ARGS = [
    "--synthetic-trainval",
    "24",
    "--synthetic-test",
    "13",
    "--image-size",
    "64",
    "--embed-dim",
    "32",
    "--hidden-dim",
    "64",
    "--gat-hidden-dim",
    "32",
    "--label-feature-dim",
    "32",
    "--batch-size",
    "8",
    "--workers",
    "0",
    "--max-steps-per-epoch",
    "2",
    "--no-progress",
]
