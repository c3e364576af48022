"""The data sets that ship with the project's dependencies, as federated datasets:
Shakespeare by (play, role) for next-word or next-character prediction (LEAF's natural
users), Fashion-MNIST and scikit-learn's breast cancer and digits tables dealt to
synthetic users (IID or Dirichlet label skew: they have no natural users, and reports
say so)."""

from __future__ import annotations

import numpy as np

from .arrays import ArrayDataset
from .text import TextDataset


class Shakespeare(TextDataset):
    """`{"kind": "shakespeare", "options": {"level": "word" | "char"}}`: 1,419 users, the
    first 80% of each role's lines train (as LEAF does). `exclude` (a
    fleet.pretrain.PublicSplit as JSON) leaves the public roles out: the federated
    population of a run pre-trained on them."""

    def __init__(self, exclude: dict | None = None, **options):
        from model_zoo.data.shakespeare import load_users

        users = load_users()
        self.excluded = 0
        if exclude is not None:
            from fleet.pretrain import PublicSplit

            public, users = PublicSplit.from_json(exclude).split(users)
            self.excluded = len(public)
        super().__init__("Shakespeare", {u.user_id: list(u.lines) for u in users}, **options)

    def describe(self) -> str:
        note = "natural users: (play, role) pairs, as in LEAF"
        return note + (f"; {self.excluded} public roles left out" if self.excluded else "")


FASHION_CLASSES = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)


class FashionMnist(ArrayDataset):
    """`{"kind": "fashion_mnist", "options": {"partition": {"users": 100, "alpha": 0.3},
    "limit": 20000}}`: the 60,000 training images (or the first `limit`), x float32
    [1, 28, 28] in [0, 1]; each synthetic user's images split 80/20 at random."""

    def __init__(
        self,
        *,
        partition: dict | None = None,
        limit: int | None = None,
        seed: int = 0,
        train_fraction: float = 0.8,
    ):
        from model_zoo.data.fashion_mnist import load

        x, y = load("train")
        if limit is not None:
            x, y = x[:limit], y[:limit]
        super().__init__(
            "Fashion-MNIST",
            x,
            y,
            partition=partition or {"users": 100},
            shuffle=True,
            seed=seed,
            train_fraction=train_fraction,
            classes=FASHION_CLASSES,
        )


class _SklearnTable(ArrayDataset):
    """A scikit-learn table (`loader`, e.g. "load_digits") dealt to `partition`
    synthetic users (default `default_users`, IID), standardized with train statistics (unless
    standardize=False: the raw measurements, e.g. to export)."""

    title: str
    loader: str
    default_users: int

    def __init__(
        self,
        *,
        partition: dict | None = None,
        seed: int = 0,
        train_fraction: float = 0.8,
        standardize: bool = True,
    ):
        import sklearn.datasets

        data = getattr(sklearn.datasets, self.loader)()
        super().__init__(
            self.title,
            data.data,
            data.target.astype(np.int64),
            partition=partition or {"users": self.default_users},
            shuffle=True,
            standardize=standardize,
            seed=seed,
            train_fraction=train_fraction,
            classes=tuple(str(n) for n in getattr(data, "target_names", ())),
        )


class BreastCancer(_SklearnTable):
    """`{"kind": "breast_cancer"}`: 569 tumours, 30 features, benign or malignant; dealt
    to 10 synthetic users by default."""

    title, loader, default_users = "breast cancer", "load_breast_cancer", 10


class Digits(_SklearnTable):
    """`{"kind": "digits"}`: 1,797 8x8 handwritten digits as 64 features, 10 classes;
    dealt to 20 synthetic users by default."""

    title, loader, default_users = "digits", "load_digits", 20
