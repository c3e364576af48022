"""Update codecs on a real keyboard_cifg delta (one epoch of local training on a
Shakespeare role): bytes on the wire vs float32, relative L2 error, encode/decode MB/s.

    python -m bench.codec_bench [--role hamlet/HAMLET]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edge_sdk.bundle import Bundle
from edge_sdk.protocol import (
    DEFAULT_CODEC,
    CodecSpec,
    UpdateMeta,
    UpdatePipeline,
    decode_update,
    encode_update,
    generate_signing_key,
)
from edge_sdk.schedules import Constant
from edge_sdk.trainer import LocalTrainer, TrainingPlan

CODECS = {
    "float32": CodecSpec(),
    "float16": CodecSpec("float16"),
    "int8": CodecSpec("int8"),
    "int4": CodecSpec("int4"),
    "int4 + rotation": CodecSpec("int4", rotate=True),
    "int2 + rotation": CodecSpec("int2", rotate=True),
    "int1 stochastic + rotation": CodecSpec("int1", rotate=True),
    "random-k 25% int4": CodecSpec("int4", sparsifier="randk", fraction=0.25),
    "int1 sign, mean|x| scale": CodecSpec("int1", stochastic=False),
    "default: top-k 5% int8": DEFAULT_CODEC,
}


def real_delta(role: str) -> tuple[dict[str, np.ndarray], list]:
    from model_zoo.data.shakespeare import load_users, word_examples
    from model_zoo.zoo import build_bundle

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Bundle.load(build_bundle("keyboard_cifg", Path(tmp) / "b", with_vocabulary=True))
        from edge_sdk.vocabulary import load_vocabulary

        vocab = load_vocabulary(bundle.vocabulary_path())
        examples = word_examples(vocab, {u.user_id: u for u in load_users()}[role].split()[0])
        start = bundle.initial_parameters()
        trainer = LocalTrainer(bundle, start)
        trainer.train(lambda e: examples, TrainingPlan(batch_size=16, schedule=Constant(1.0)))
        return trainer.delta(start), [s.to_json() for s in bundle.parameter_specs]


def codec_table(delta: dict[str, np.ndarray], specs: list, repeats: int = 3) -> list[dict]:
    key = generate_signing_key()
    meta = UpdateMeta("bench", "0" * 64, 0, "device", "k", 1)
    flat = np.concatenate([delta[s["name"]].ravel() for s in specs])
    mb = flat.nbytes / 2**20
    rows = []
    for name, codec in CODECS.items():
        enc_t, dec_t = [], []
        for r in range(repeats):
            t = time.perf_counter()
            msg = encode_update(
                delta,
                specs,
                meta,
                UpdatePipeline(codec),
                signing_key=key,
                rng=np.random.default_rng(r),
            )
            enc_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            got = decode_update(msg, specs, public_key=None).tensors
            dec_t.append(time.perf_counter() - t)
        back = np.concatenate([got[s["name"]].ravel() for s in specs])
        rows.append(
            {
                "codec": name,
                "bytes": len(msg),
                "ratio": len(msg) / flat.nbytes,
                "rel_l2": float(np.linalg.norm(back - flat) / np.linalg.norm(flat)),
                "encode_mb_s": mb / np.median(enc_t),
                "decode_mb_s": mb / np.median(dec_t),
            }
        )
    return rows


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="hamlet/HAMLET")
    args = parser.parse_args(argv)
    delta, specs = real_delta(args.role)
    rows = codec_table(delta, specs)
    print(f"\n== Update codecs on a real keyboard_cifg delta ({args.role}, 1 epoch) ==")
    print("(bytes: the whole signed message; vs f32: against the raw float32 delta)")
    print(
        f"{'codec':36s} {'bytes':>10s} {'vs f32':>7s} {'rel L2':>7s} {'enc MB/s':>9s} {'dec MB/s':>9s}"
    )
    for r in rows:
        print(
            f"{r['codec']:36s} {r['bytes']:10d} {r['ratio']:7.4f} {r['rel_l2']:7.3f} "
            f"{r['encode_mb_s']:9.0f} {r['decode_mb_s']:9.0f}"
        )
    return rows


if __name__ == "__main__":
    main()
