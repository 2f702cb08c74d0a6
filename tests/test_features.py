import gzip
import pickle

import numpy as np
import pytest
import torch

from msrn.features import (
    UnsafePickleError,
    glove_words,
    label_features_from_glove,
    load_label_features,
    load_label_graph_npz,
    load_label_statistics,
    load_official_pickle,
)

DIM = 6


@pytest.fixture()
def glove_vectors():
    rng = np.random.default_rng(0)
    words = [
        "the",
        "dining",
        "table",
        "person",
        "tv",
        "monitor",
        "motorbike",
        "motor",
        "bike",
        "potted",
        "plant",
        "Apple",
        "apple",
        "hair",
        "dri",
        "er",
        "car",
    ]
    return {w: rng.standard_normal(DIM).astype(np.float32) for w in words}


def _write_glove(path, vectors, extra_lines=()):
    lines = [w + " " + " ".join(f"{x:.6f}" for x in v) for w, v in vectors.items()]
    lines[2:2] = list(extra_lines)
    text = "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    # the file keeps 6 decimals: the reference must use what the file holds
    return {w: np.asarray([float(f"{x:.6f}") for x in v], dtype=np.float32) for w, v in vectors.items()}


def test_glove_single_multiword_and_compound_names(tmp_path, glove_vectors):
    # a token with a space in it, as glove.840B has, must not disturb the parse
    spaced = ". . . " + " ".join(["0.5"] * DIM)
    stored = _write_glove(tmp_path / "glove.txt", glove_vectors, extra_lines=[spaced])
    names = ["person", "dining table", "diningtable", "dining_table", "tvmonitor", "motorbike", "pottedplant"]
    features = label_features_from_glove(tmp_path / "glove.txt", names)
    assert features.dtype == torch.float32 and features.shape == (len(names), DIM)
    dining_table = (stored["dining"] + stored["table"]) / 2
    expected = [
        stored["person"],
        dining_table,
        dining_table,
        dining_table,
        (stored["tv"] + stored["monitor"]) / 2,
        stored["motorbike"],  # in the file: never split into motor + bike
        (stored["potted"] + stored["plant"]) / 2,
    ]
    torch.testing.assert_close(features, torch.from_numpy(np.stack(expected)), rtol=0, atol=1e-6)


def test_glove_case_gzip_aliases_and_three_pieces(tmp_path, glove_vectors):
    stored = _write_glove(tmp_path / "glove.txt.gz", glove_vectors)
    features = label_features_from_glove(
        tmp_path / "glove.txt.gz", ["Apple", "CAR", "hairdrier", "sofa"], aliases={"sofa": "the car"}
    )
    torch.testing.assert_close(features[0], torch.from_numpy(stored["Apple"]))  # as written first
    torch.testing.assert_close(features[1], torch.from_numpy(stored["car"]))  # then lower case
    # "hairdrier": no two-piece split exists (no "drier"), the three-piece one is hair + dri + er
    hair_dri_er = (stored["hair"] + stored["dri"] + stored["er"]) / 3
    torch.testing.assert_close(features[2], torch.from_numpy(hair_dri_er))
    torch.testing.assert_close(features[3], torch.from_numpy((stored["the"] + stored["car"]) / 2))


def test_glove_words_rule_on_a_vocabulary():
    vocabulary = {"dining", "table", "din", "ingtable", "tv", "monitor", "tvmonitor", "a", "b"}
    words = glove_words(["diningtable", "tvmonitor", "dining table"], vocabulary)
    assert words == [["dining", "table"], ["tvmonitor"], ["dining", "table"]]
    # pieces shorter than two characters are never used
    with pytest.raises(ValueError, match="'ab'"):
        glove_words(["ab"], vocabulary)


def test_glove_missing_word_is_named(tmp_path, glove_vectors):
    _write_glove(tmp_path / "glove.txt", glove_vectors)
    with pytest.raises(ValueError, match=r"'zebra' \(label 'zebra'\).*'xylophone' \(label 'big xylophone'\)"):
        label_features_from_glove(tmp_path / "glove.txt", ["person", "zebra", "big xylophone"])
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        label_features_from_glove(tmp_path / "nope.txt", ["person"])
    with pytest.raises(ValueError, match="needs label names"):
        load_label_features(tmp_path / "glove.txt")


def test_word2vec_text_header_is_skipped(tmp_path):
    (tmp_path / "vectors.txt").write_text("2 3\ncar 1 2 3\nperson 4 5 6\n")
    features = label_features_from_glove(tmp_path / "vectors.txt", ["person", "car"])
    assert features.tolist() == [[4.0, 5.0, 6.0], [1.0, 2.0, 3.0]]


def test_glove_bad_vector_is_reported(tmp_path):
    (tmp_path / "glove.txt").write_text("person 1 2 3\ncar 1 x 3\n")
    with pytest.raises(ValueError, match="line 2.*'car'"):
        label_features_from_glove(tmp_path / "glove.txt", ["car"])


def test_load_label_features_dispatches_on_file_type(tmp_path, glove_vectors):
    stored = _write_glove(tmp_path / "vectors.txt", glove_vectors)
    from_text = load_label_features(tmp_path / "vectors.txt", ["car", "person"])
    torch.testing.assert_close(from_text, torch.from_numpy(np.stack([stored["car"], stored["person"]])))

    matrix = np.arange(12, dtype=np.float64).reshape(3, 4)
    np.savez(tmp_path / "stats.npz", names=np.array(["a", "b c", "d"]), glove=matrix)
    torch.testing.assert_close(load_label_features(tmp_path / "stats.npz"), torch.from_numpy(matrix).float())
    picked = load_label_features(tmp_path / "stats.npz", ["d", "a"])  # rows picked and ordered by name
    torch.testing.assert_close(picked, torch.from_numpy(matrix[[2, 0]]).float())
    with pytest.raises(ValueError, match=r"no labels \['e'\]"):
        load_label_features(tmp_path / "stats.npz", ["a", "e"])

    with open(tmp_path / "glove.pkl", "wb") as handle:
        pickle.dump(matrix.astype(np.float32), handle, protocol=2)
    torch.testing.assert_close(
        load_label_features(tmp_path / "glove.pkl", ["x", "y", "z"]), torch.from_numpy(matrix).float()
    )
    with pytest.raises(ValueError, match="3 rows but 2 label names"):
        load_label_features(tmp_path / "glove.pkl", ["x", "y"])


def test_official_npz_layout(shared_dir):
    path = shared_dir / "data/official/voc_label_graph.npz"
    content = load_label_graph_npz(path)
    raw = np.load(path)
    assert content["names"][10] == "diningtable" and len(content["names"]) == 20
    np.testing.assert_array_equal(content["cooccurrence"], raw["cooccurrence"])
    np.testing.assert_array_equal(content["label_counts"], raw["label_counts"])
    features = load_label_features(path)
    assert features.shape == (20, 300)
    np.testing.assert_array_equal(features.numpy(), raw["glove"])
    cooccurrence, counts, names = load_label_statistics(path, names=["person", "chair"])
    person, chair = content["names"].index("person"), content["names"].index("chair")
    np.testing.assert_array_equal(cooccurrence, raw["cooccurrence"][np.ix_([person, chair], [person, chair])])
    np.testing.assert_array_equal(counts, raw["label_counts"][[person, chair]])
    assert names == ["person", "chair"]


def test_npz_inconsistent_sizes_refused(tmp_path):
    np.savez(tmp_path / "bad.npz", names=np.array(["a", "b"]), label_counts=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="disagree on the number of labels"):
        load_label_graph_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "objects.npz", glove=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays are refused"):
        load_label_graph_npz(tmp_path / "objects.npz")


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_official_pickles_round_trip(tmp_path, protocol):
    rng = np.random.default_rng(1)
    glove = rng.standard_normal((5, 300)).astype(np.float32)
    adj = {"adj": rng.integers(0, 9, (5, 5)), "nums": rng.integers(1, 20, 5)}
    with open(tmp_path / "voc_glove_word2vec.pkl", "wb") as handle:
        pickle.dump(glove, handle, protocol=protocol)
    with open(tmp_path / "voc_adj.pkl", "wb") as handle:
        pickle.dump(adj, handle, protocol=protocol)
    np.testing.assert_array_equal(load_official_pickle(tmp_path / "voc_glove_word2vec.pkl"), glove)
    cooccurrence, counts, names = load_label_statistics(tmp_path / "voc_adj.pkl")
    np.testing.assert_array_equal(cooccurrence, adj["adj"])
    np.testing.assert_array_equal(counts, adj["nums"])
    assert names is None
    with pytest.raises(ValueError, match="adjacency pickle"):
        load_label_features(tmp_path / "voc_adj.pkl")
    with pytest.raises(ValueError, match="'adj' and 'nums'"):
        load_label_statistics(tmp_path / "voc_glove_word2vec.pkl")


class _Hostile:
    """Unpickling this would write a file: the restricted unpickler must refuse before that."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return eval, (f"open({self.target!r}, 'w').write('pwned')",)


@pytest.mark.parametrize("protocol", [2, 5])
def test_hostile_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned.txt"
    with open(tmp_path / "voc_adj.pkl", "wb") as handle:
        pickle.dump({"adj": _Hostile(marker), "nums": np.ones(2)}, handle, protocol=protocol)
    with pytest.raises(UnsafePickleError, match=r"builtins\.eval"):
        load_label_statistics(tmp_path / "voc_adj.pkl")
    assert not marker.exists()
    # the same file through plain pickle would have run the code: the test's premise holds
    with open(tmp_path / "voc_adj.pkl", "rb") as handle:
        pickle.load(handle)
    assert marker.read_text() == "pwned"


def test_other_objects_are_refused(tmp_path):
    with open(tmp_path / "tensor.pkl", "wb") as handle:
        pickle.dump(torch.zeros(3), handle)
    with pytest.raises(UnsafePickleError, match="torch"):
        load_official_pickle(tmp_path / "tensor.pkl")
    with open(tmp_path / "objects.pkl", "wb") as handle:
        pickle.dump(np.array([1, "a"], dtype=object), handle)
    with pytest.raises(UnsafePickleError, match="object array"):
        load_official_pickle(tmp_path / "objects.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_official_pickle(tmp_path / "junk.pkl")


def test_glove_stops_reading_once_every_word_is_found(tmp_path, glove_vectors, monkeypatch):
    import msrn.features as features

    stored = _write_glove(tmp_path / "glove.txt", glove_vectors)
    lines = (tmp_path / "glove.txt").read_text().splitlines(keepends=True)
    person = next(i for i, line in enumerate(lines) if line.startswith("person "))

    class Stream:  # the file as a stream that must not be read past the last needed word
        def __init__(self):
            self.lines = iter(lines[: person + 1])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def __iter__(self):
            yield from self.lines
            raise AssertionError("read past the last needed word")

    monkeypatch.setattr(features, "_open_text", lambda path: Stream())
    result = label_features_from_glove(tmp_path / "glove.txt", ["person", "the"])
    torch.testing.assert_close(result, torch.from_numpy(np.stack([stored["person"], stored["the"]])))
