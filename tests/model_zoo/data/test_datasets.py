from __future__ import annotations

import gzip

import numpy as np
import pytest

from model_zoo.data import DatasetFormatError, DatasetMissingError, fashion_mnist, partition, tabular


def test_fashion_mnist_loads_scaled_images_and_labels():
    if not fashion_mnist.DEFAULT_DIR.is_dir():
        pytest.skip(f"{fashion_mnist.DEFAULT_DIR} missing: Debian package "
                    "dataset-fashion-mnist is not installed")
    x, y = fashion_mnist.load("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert 0.0 == x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == [1000] * 10


def test_fashion_mnist_missing_directory_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist.load("test", tmp_path / "nope")


def _write_idx(path, magic: int, shape, fill=0):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
    with gzip.open(path, "wb") as f:
        f.write(header + bytes([fill]) * int(np.prod(shape)))


def test_fashion_mnist_reads_idx_files_and_checks_them(tmp_path):
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (3, 28, 28), fill=255)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (3,), fill=9)
    x, y = fashion_mnist.load("test", str(tmp_path))
    assert x.shape == (3, 1, 28, 28) and np.all(x == 1.0) and y.tolist() == [9, 9, 9]
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x803, (3,))
    with pytest.raises(DatasetFormatError, match="magic"):
        fashion_mnist.load("test", tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (4,))
    with pytest.raises(DatasetFormatError, match="labels"):
        fashion_mnist.load("test", tmp_path)
    with pytest.raises(DatasetMissingError, match="train-images"):
        fashion_mnist.load("train", tmp_path)
    with pytest.raises(ValueError, match="split"):
        fashion_mnist.load("validation", tmp_path)


def test_breast_cancer_is_standardized_with_train_statistics():
    (x, y), (xt, yt) = tabular.load_breast_cancer()
    assert x.shape == (455, 30) and xt.shape == (114, 30)
    assert x.dtype == xt.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-3)
    assert abs(xt.mean()) < 0.2  # test rows use the train statistics, so only near 0
    assert set(np.unique(y)) == {0, 1}


def test_tabular_split_depends_only_on_the_seed():
    (a, _), _ = tabular.load_breast_cancer(seed=1)
    (b, _), _ = tabular.load_breast_cancer(seed=1)
    (c, _), _ = tabular.load_breast_cancer(seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_digits_constant_training_features_stay_finite():
    (x, y), (xt, yt) = tabular.load_digits()
    assert x.shape[1] == 64 and set(np.unique(y)) == set(range(10))
    assert np.all(np.isfinite(xt)) and np.abs(xt).max() < 100


def test_partitions_cover_every_index_once():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    for parts in (partition.partition_iid(1000, 7, rng),
                  partition.partition_dirichlet(labels, 7, 0.3, rng)):
        assert len(parts) == 7 and all(p.dtype == np.int64 for p in parts)
        np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(1000))


def test_iid_parts_differ_in_size_by_at_most_one():
    sizes = [len(p) for p in partition.partition_iid(1003, 10, np.random.default_rng(0))]
    assert max(sizes) - min(sizes) <= 1


def test_partitions_depend_only_on_the_generator():
    labels = np.repeat(np.arange(10), 50)
    a = partition.partition_dirichlet(labels, 5, 0.5, np.random.default_rng(3))
    b = partition.partition_dirichlet(labels, 5, 0.5, np.random.default_rng(3))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))


def test_small_dirichlet_alpha_skews_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 500)
    skewed = partition.partition_dirichlet(labels, 10, 0.05, rng)
    even = partition.partition_dirichlet(labels, 10, 1000.0, rng)

    def dominance(parts):
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts if len(p)])

    assert dominance(skewed) > 0.5 and dominance(even) < 0.2


def test_partitions_refuse_bad_arguments():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="n_clients"):
        partition.partition_iid(10, 0, rng)
    with pytest.raises(ValueError, match="alpha"):
        partition.partition_dirichlet(np.zeros(10, np.int64), 2, 0.0, rng)
    with pytest.raises(ValueError, match="integer"):
        partition.partition_dirichlet(np.zeros(10), 2, 1.0, rng)
