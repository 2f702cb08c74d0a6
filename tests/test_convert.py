"""The converter, checked against a reference forward pass written here from docs/design.md
(sections 1-5, 9)."""

import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

import msrn  # noqa: F401  (registers the architectures)
from msrn.cli import main
from msrn.convert import (
    OFFICIAL_LABEL_NAMES,
    convert_official,
    convert_official_state_dict,
    load_official_checkpoint,
    official_model_args,
)

N_LABELS, N_GROUPS, EMBED, HIDDEN = 5, 2, 32, 64
TRUNK_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet101": (256, 512, 1024, 2048)}


def official_state_dict(arch="resnet18", n=N_LABELS, m=N_GROUPS, d=EMBED, hidden=HIDDEN, seed=0):
    """An authors'-layout state dict (docs/design.md section 9) with random values."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    with torch.device("meta"):  # names and shapes only: skip torchvision's slow init
        trunk = getattr(torchvision.models, arch)(weights=None).state_dict()
    state = {}
    for key, value in trunk.items():
        if key.startswith("fc."):
            continue
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith("running_mean"):
            value = rand(*value.shape)
        elif key.endswith("num_batches_tracked"):
            value = torch.tensor(7, device="cpu")
        elif key.endswith(("bn1.weight", "bn2.weight", "bn3.weight", "downsample.1.weight")):
            value = 1 + rand(*value.shape)
        else:
            value = rand(*value.shape, scale=0.05)
        state["resnet_101." + key] = value
    c1, c2, c3, c4 = TRUNK_CHANNELS[arch]
    for index, channels in enumerate((c1, c2, c3)):  # conv_buffer0 (on layer1) exists but is unused
        state[f"resnet_101.conv_buffer{index}.weight"] = rand(channels, channels, 1, 1, scale=0.05)
        state[f"resnet_101.conv_buffer{index}.bias"] = rand(channels)
    for index, channels in enumerate((c2, c3, c4)):
        state[f"ProjectM.{index}.weight"] = rand(d, channels, 1, 1, scale=0.05)
        state[f"ProjectM.{index}.bias"] = rand(d)
    state["fc_label.weight"] = rand(256, 300, scale=0.05)
    state["fc_label.bias"] = rand(256)
    for prefix, (fan_in, fan_out) in {
        "label_embed.layers.0": (256, 300),
        "label_embed.layers.1": (300, d),
        "group_embed.layers.0.embed": (d, d),
        "group_embed.layers.0.assign_mat": (d, m),
    }.items():
        state[f"{prefix}.W"] = rand(fan_in, fan_out)
        state[f"{prefix}.a"] = rand(2 * fan_out, 1, scale=0.3)
    state["fc1.weight"] = rand(hidden, (n + m) * 3 * d, scale=0.02)
    state["fc1.bias"] = rand(hidden)
    state["fc2.weight"] = rand(n, hidden)
    state["fc2.bias"] = rand(n)
    state["W"] = rand(n, d)  # the two unused tensors of the reference code
    state["B"] = rand(n)
    return state


def label_data(n=N_LABELS, seed=0):
    rng = np.random.default_rng(seed)
    glove = rng.standard_normal((n, 300)).astype(np.float32) * 0.3
    targets = (rng.random((60, n)) < np.linspace(0.2, 0.7, n)).astype(np.int64)
    cooccurrence = targets.T @ targets
    np.fill_diagonal(cooccurrence, 0)  # the authors' adj has a zero diagonal
    return glove, {"adj": cooccurrence, "nums": targets.sum(axis=0)}


# ------------------------------------------------------------------------ reference (docs/design.md)
def reference_mask(cooccurrence, counts, threshold):
    """Section 1: node i attends to itself and to every j with P(i | j) = co[j, i] / count[j] >= t."""
    n = len(counts)
    mask = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            if i != j and counts[j] > 0 and cooccurrence[j, i] / counts[j] >= threshold:
                mask[i, j] = True
    return mask


def reference_gat(x, W, a, mask):
    """Section 2: h = x W; e_ij = LeakyReLU_0.2(a_src.h_i + a_dst.h_j);
    h'_i = ELU(sum_j alpha_ij h_j + h_i) over the neighbourhood of i."""
    h = x @ W
    out = W.shape[1]
    e = F.leaky_relu(h @ a[:out] + (h @ a[out:]).T, 0.2)
    alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=1)
    return F.elu(alpha @ h + h)


def reference_sga(f, e):
    """Section 4: s[p,k,c] = f[p,c] e[k,c]; softmax over p; o[k,c] = sum_p a f."""
    f = f.flatten(2).transpose(1, 2)  # [N, P, d]
    s = f[:, :, None, :] * e[None, None, :, :]  # [N, P, K, d]
    a = torch.softmax(s, dim=1)
    return (a * f[:, :, None, :]).sum(dim=1)  # [N, K, d]


def reference_embeddings(state, glove, mask):
    """Section 2, official variant: Linear 300->256, two GATs, then DiffPool on ReLU(E_l)."""
    v = F.linear(torch.as_tensor(glove), state["fc_label.weight"], state["fc_label.bias"])
    v = reference_gat(v, state["label_embed.layers.0.W"], state["label_embed.layers.0.a"], mask)
    e_label = reference_gat(v, state["label_embed.layers.1.W"], state["label_embed.layers.1.a"], mask)
    x = F.relu(e_label)
    z = reference_gat(x, state["group_embed.layers.0.embed.W"], state["group_embed.layers.0.embed.a"], mask)
    s = torch.softmax(
        reference_gat(
            x, state["group_embed.layers.0.assign_mat.W"], state["group_embed.layers.0.assign_mat.a"], mask
        ),
        dim=1,
    )
    return e_label, s.T @ z, s


@torch.no_grad()
def reference_forward(state, glove, mask, images, arch="resnet18"):
    trunk = getattr(torchvision.models, arch)(weights=None)
    trunk.load_state_dict(
        {
            k[len("resnet_101.") :]: v
            for k, v in state.items()
            if k.startswith("resnet_101.") and "conv_buffer" not in k
        },
        strict=False,
    )
    trunk.eval()
    x = trunk.maxpool(trunk.relu(trunk.bn1(trunk.conv1(images))))
    x2 = trunk.layer2(trunk.layer1(x))
    x3 = trunk.layer3(x2)
    x4 = trunk.layer4(x3)
    branches = []
    for index, stage in enumerate((x2, x3, x4)):
        if index < 2:  # buffer conv on layer2 and layer3 only
            stage = F.conv2d(
                stage,
                state[f"resnet_101.conv_buffer{index + 1}.weight"],
                state[f"resnet_101.conv_buffer{index + 1}.bias"],
            )
        stage = F.max_pool2d(stage, 2, 2)
        branches.append(F.conv2d(stage, state[f"ProjectM.{index}.weight"], state[f"ProjectM.{index}.bias"]))
    e_label, e_group, _ = reference_embeddings(state, glove, mask)
    o = torch.cat([reference_sga(f, e_label) for f in branches], dim=2)  # [N, n, 3d]
    q = torch.cat([reference_sga(f, e_group) for f in branches], dim=2)  # [N, m, 3d]
    features = torch.tanh(torch.cat([o, q], dim=1)).flatten(1)
    hidden = F.leaky_relu(F.linear(features, state["fc1.weight"], state["fc1.bias"]), 0.01)
    return F.linear(hidden, state["fc2.weight"], state["fc2.bias"])


# ------------------------------------------------------------------------------------- tests
def test_every_tensor_lands_where_the_spec_says():
    state = official_state_dict()
    glove, adj = label_data()
    model = convert_official(state, glove, (adj["adj"], adj["nums"]), names=list("abcde"))
    ours = model.state_dict()
    assert model.variant == "official" and model.backbone.backbone_name == "resnet18"
    for key, value in state.items():
        if key.startswith("resnet_101.conv_buffer0") or key in ("W", "B"):
            continue
        if key.startswith("resnet_101.conv_buffer"):
            index = int(key[len("resnet_101.conv_buffer")]) - 1
            assert torch.equal(ours[f"backbone.buffer_convs.{index}.{key.rsplit('.', 1)[1]}"], value)
        elif key.startswith("resnet_101."):
            assert torch.equal(ours["backbone.trunk." + key[len("resnet_101.") :]], value), key
    for index in range(3):
        for name in ("weight", "bias"):
            projection = ours[f"backbone.projections.{index}.{name}"]
            assert torch.equal(projection, state[f"ProjectM.{index}.{name}"])
    assert torch.equal(ours["lge.input_proj.weight"], state["fc_label.weight"])
    for ours_prefix, official in [
        ("lge.gats.0", "label_embed.layers.0"),
        ("lge.gats.1", "label_embed.layers.1"),
        ("lge.diffpool.embed", "group_embed.layers.0.embed"),
        ("lge.diffpool.assign", "group_embed.layers.0.assign_mat"),
    ]:
        W, a = state[f"{official}.W"], state[f"{official}.a"]
        assert torch.equal(ours[f"{ours_prefix}.weight"], W.T)  # ours is [out, in] like nn.Linear
        assert torch.equal(ours[f"{ours_prefix}.att_self"], a[: W.shape[1], 0])
        assert torch.equal(ours[f"{ours_prefix}.att_neighbor"], a[W.shape[1] :, 0])
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
        assert torch.equal(ours["head." + name], state[name])
    assert torch.equal(ours["label_features"], torch.from_numpy(glove))
    assert torch.equal(ours["label_graph"], reference_mask(adj["adj"], adj["nums"], 0.4))
    assert model.label_names == list("abcde")
    # nothing else: the converted dict covers the model exactly, baked-in buffers aside
    assert set(convert_official_state_dict(state, model)) == set(ours) - {"label_features", "label_graph"}


def test_converted_logits_equal_the_reference_forward():
    state = official_state_dict()
    glove, adj = label_data()
    model = convert_official(state, glove, (adj["adj"], adj["nums"]), names=list("abcde"), threshold=0.3)
    images = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        logits = model(images)
    expected = reference_forward(state, glove, reference_mask(adj["adj"], adj["nums"], 0.3), images)
    assert int(model.label_graph.sum()) > N_LABELS  # the graph has real edges to get right
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    assert logits.std() > 1e-2  # not a degenerate constant output
    # official compactness loss: 1e-4 * sum_i ||E_l[i] - E_g[argmax_k S[i, k]]|| (not squared)
    with torch.no_grad():
        e_label, e_group, s = reference_embeddings(state, glove, reference_mask(adj["adj"], adj["nums"], 0.3))
        expected_loss = 1e-4 * (e_label - e_group[s.argmax(dim=1)]).norm(dim=1).sum()
        torch.testing.assert_close(model.compactness_loss(weighted=True), expected_loss)


def test_cli_end_to_end_with_the_authors_files(tmp_path, capsys):
    state = official_state_dict()
    glove, adj = label_data()
    checkpoint = {
        "epoch": 3,
        "arch": "resnet101",
        "best_score": torch.tensor(93.0),
        "state_dict": {"module." + k: v for k, v in state.items()},
    }  # saved from DataParallel
    torch.save(checkpoint, tmp_path / "checkpoint.pth.tar")
    with open(tmp_path / "voc_glove_word2vec.pkl", "wb") as handle:
        pickle.dump(glove, handle, protocol=2)
    with open(tmp_path / "voc_adj.pkl", "wb") as handle:
        pickle.dump(adj, handle, protocol=2)
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\ne\n")
    out = tmp_path / "converted"
    argv = [
        "convert-official",
        str(tmp_path / "checkpoint.pth.tar"),
        "--glove",
        str(tmp_path / "voc_glove_word2vec.pkl"),
        "--adj",
        str(tmp_path / "voc_adj.pkl"),
        "--out",
        str(out),
        "--names",
        str(tmp_path / "names.txt"),
    ]
    assert main(argv) == 0
    assert "5 labels" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "msrn_resnet18" and config["label_names"] == list("abcde")
    assert config["model_args"]["variant"] == "official"

    # rebuild from the folder alone: timm reads config.json and loads model.safetensors
    import timm

    rebuilt = timm.create_model(f"local-dir:{out}").eval()
    assert rebuilt.label_names == list("abcde") and rebuilt.variant == "official"
    assert "label_features" in dict(rebuilt.named_buffers())  # fixed features, as converted
    converted = convert_official(state, glove, (adj["adj"], adj["nums"]), names=list("abcde"))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in converted.parameters())
    assert torch.equal(rebuilt.label_graph, reference_mask(adj["adj"], adj["nums"], 0.4))
    images = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        logits = rebuilt(images)
    expected = reference_forward(state, glove, reference_mask(adj["adj"], adj["nums"], 0.4), images)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)

    assert main(argv) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err


def test_missing_extra_and_misshaped_keys_are_listed():
    glove, adj = label_data()
    model = msrn.MSRN(
        **{k: v for k, v in official_model_args(official_state_dict()).items() if k != "label_feature_dim"},
        label_features=glove,
    )

    def error(state):
        with pytest.raises(ValueError) as info:
            convert_official_state_dict(state, model)
        return str(info.value)

    state = official_state_dict()
    del state["fc1.bias"], state["resnet_101.layer3.1.bn2.running_var"]
    message = error(state)
    assert "missing keys: 2 keys (" in message and "fc1.bias" in message
    assert "resnet_101.layer3.1.bn2.running_var" in message

    state = official_state_dict()
    state["resnet_101.fc.weight"] = torch.zeros(1000, 512)
    state["extra_head.bias"] = torch.zeros(3)
    assert "unexpected keys: 2 keys (extra_head.bias, resnet_101.fc.weight)" in error(state)

    state = official_state_dict()
    state["label_embed.layers.1.a"] = torch.zeros(2 * EMBED + 2, 1)
    state["ProjectM.1.bias"] = torch.zeros(EMBED + 1)
    message = error(state)
    assert "wrong shapes" in message and "label_embed.layers.1.a [66, 1]" in message
    assert "ProjectM.1.bias [33]" in message

    # the same check guards the user-level converter (missing keys before any weight is loaded)
    state = official_state_dict()
    del state["fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys: 1 key \(fc1.bias\)"):
        convert_official(state, glove, (adj["adj"], adj["nums"]), names=list("abcde"))


def test_inconsistent_label_inputs_are_clear_errors():
    state = official_state_dict()
    glove, adj = label_data()
    with pytest.raises(ValueError, match="3 label names given but the checkpoint has 5 labels"):
        convert_official(state, glove, (adj["adj"], adj["nums"]), names=["a", "b", "c"])
    with pytest.raises(ValueError, match="100-dimensional"):
        convert_official(state, glove[:, :100], (adj["adj"], adj["nums"]), names=list("abcde"))
    with pytest.raises(ValueError, match="checkpoint has 5 labels and no label names"):
        convert_official(state, glove, (adj["adj"], adj["nums"]))
    with pytest.raises(ValueError, match="Not an MSRN checkpoint"):
        convert_official({"fc.weight": torch.zeros(2, 2)}, glove, (adj["adj"], adj["nums"]))
    no_trunk = {k: v for k, v in state.items() if not k.startswith("resnet_101.layer")}
    with pytest.raises(ValueError, match=r"missing keys resnet_101.layer1..4"):
        convert_official(no_trunk, glove, (adj["adj"], adj["nums"]), names=list("abcde"))
    odd_trunk = {k: v for k, v in state.items() if not k.startswith("resnet_101.layer3.1.")}
    with pytest.raises(ValueError, match=r"\[2, 2, 1, 2\] basic blocks.*--backbone"):
        convert_official(odd_trunk, glove, (adj["adj"], adj["nums"]), names=list("abcde"))


def test_hostile_files_are_refused_by_the_cli(tmp_path, capsys):
    glove, adj = label_data()
    marker = tmp_path / "pwned"

    class Hostile:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w').write('x')",)

    with open(tmp_path / "adj.pkl", "wb") as handle:
        pickle.dump({"adj": Hostile(), "nums": adj["nums"]}, handle)
    with open(tmp_path / "glove.pkl", "wb") as handle:
        pickle.dump(glove, handle)
    torch.save(official_state_dict(), tmp_path / "ckpt.pth")
    (tmp_path / "names.txt").write_text("a\nb\nc\nd\ne\n")
    argv = [
        "convert-official",
        str(tmp_path / "ckpt.pth"),
        "--glove",
        str(tmp_path / "glove.pkl"),
        "--adj",
        str(tmp_path / "adj.pkl"),
        "--out",
        str(tmp_path / "out"),
        "--names",
        str(tmp_path / "names.txt"),
    ]
    assert main(argv) == 2
    assert "refusing to load builtins.eval" in capsys.readouterr().err
    assert not marker.exists()

    # a checkpoint that would run code when unpickled is refused by torch.load(weights_only=True)
    torch.save({"state_dict": official_state_dict(), "extra": Hostile()}, tmp_path / "hostile.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official_checkpoint(tmp_path / "hostile.pth")
    assert not marker.exists()


def test_official_label_orders_match_the_data_files(shared_dir):
    for dataset in ("voc", "coco"):
        names = np.load(shared_dir / f"data/official/{dataset}_label_graph.npz")["names"]
        assert tuple(str(n) for n in names) == OFFICIAL_LABEL_NAMES[dataset]


@pytest.mark.slow
def test_full_size_voc_checkpoint_converts_with_the_official_parameter_count(shared_dir, tmp_path):
    state = official_state_dict("resnet101", n=20, m=4, d=512, hidden=2048)
    npz = shared_dir / "data/official/voc_label_graph.npz"
    args = official_model_args(state)
    assert args["backbone"] == "resnet101" and args["num_classes"] == 20 and args["num_groups"] == 4
    model = convert_official(state, npz, npz)  # names, features and statistics from our .npz
    assert sum(p.numel() for p in model.parameters()) == 121_763_764
    assert model.label_names == list(OFFICIAL_LABEL_NAMES["voc"])
    assert int(model.label_graph.sum()) - 20 == 6  # docs/design.md section 1
    ours = model.state_dict()
    deep_block = "layer3.22.conv3.weight"
    assert torch.equal(ours["backbone.trunk." + deep_block], state["resnet_101." + deep_block])
    assert torch.equal(ours["lge.gats.1.weight"], state["label_embed.layers.1.W"].T)
    assign_a = state["group_embed.layers.0.assign_mat.a"]
    assert torch.equal(ours["lge.diffpool.assign.att_neighbor"], assign_a[4:, 0])
    assert torch.equal(ours["head.fc1.weight"], state["fc1.weight"])
