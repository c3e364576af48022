from __future__ import annotations

import numpy as np
import pytest

from model_zoo.data import fashion_mnist, partition, tabular


def test_fashion_mnist_loads_scaled_images_and_labels():
    if not fashion_mnist.DEFAULT_DIR.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist is not installed")
    x, y = fashion_mnist.load("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert sorted(np.unique(y)) == list(range(10))


def test_fashion_mnist_missing_directory_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        fashion_mnist.load("test", tmp_path / "nope")


def test_breast_cancer_is_standardized_with_train_statistics():
    (x, y), (xt, yt) = tabular.load_breast_cancer()
    assert x.shape[1] == 30 and len(x) + len(xt) == 569
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-3)
    assert set(np.unique(y)) == {0, 1}


def test_partitions_cover_every_index_once():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    for parts in (
        partition.partition_iid(1000, 7, rng),
        partition.partition_dirichlet(labels, 7, 0.3, rng),
    ):
        together = np.sort(np.concatenate(parts))
        np.testing.assert_array_equal(together, np.arange(1000))


def test_small_dirichlet_alpha_skews_labels():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 500)
    parts = partition.partition_dirichlet(labels, 10, 0.05, rng)
    dominant = [
        np.bincount(labels[p], minlength=10).max() / max(1, len(p)) for p in parts if len(p)
    ]
    assert np.mean(dominant) > 0.5
