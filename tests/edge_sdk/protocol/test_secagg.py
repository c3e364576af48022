"""Secure aggregation: the server recovers only the sum, with dropouts at every stage."""

from __future__ import annotations

import numpy as np
import pytest

from edge_sdk.protocol import BadPayload
from edge_sdk.protocol.secagg import (
    FixedPoint,
    SecAggClient,
    SecAggServer,
    reconstruct_secret,
    share_secret,
)

CODEC = FixedPoint(clip=1.0, frac_bits=16)


def _round(n, threshold, vectors, drop_before_masking=(), drop_before_reveal=()):
    clients = {i: SecAggClient(i, threshold, CODEC) for i in range(1, n + 1)}
    server = SecAggServer(threshold, CODEC)
    keys = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    for i, c in clients.items():
        server.route_shares(i, c.share_keys(keys))
    for i, c in clients.items():
        if i not in drop_before_masking:
            server.collect_masked(i, c.masked_input(vectors[i], server.shares_for(i)))
    survivors = set(server.survivors)
    dropped = server.shared - survivors
    reveals = {
        i: clients[i].reveal(survivors, dropped) for i in survivors if i not in drop_before_reveal
    }
    return server, server.unmask(reveals, vectors[1].size), survivors


def test_shamir_reconstructs_from_any_threshold_subset():
    secret = bytes(range(32))
    shares = share_secret(secret, 3, [1, 2, 3, 4, 5])
    assert reconstruct_secret({x: shares[x] for x in (2, 4, 5)}) == secret
    # below the threshold the interpolation is a random field element, not the secret
    assert reconstruct_secret({x: shares[x] for x in (1, 2)}, length=66)[-32:] != secret


@pytest.mark.parametrize("drops", ["none", "before_masking", "before_reveal"])
def test_the_sum_equals_the_plain_sum_when_20_percent_drop(drops):
    rng = np.random.default_rng(0)
    n, threshold = 10, 6
    vectors = {i: rng.uniform(-0.5, 0.5, 300).astype(np.float32) for i in range(1, n + 1)}
    kwargs = {
        "none": {},
        "before_masking": {"drop_before_masking": {3, 7}},
        "before_reveal": {"drop_before_reveal": {2, 9}},
    }[drops]
    server, total, survivors = _round(n, threshold, vectors, **kwargs)
    expected = sum(vectors[i] for i in survivors)
    np.testing.assert_allclose(total, expected, atol=len(survivors) * 0.5 / 2**16 + 1e-6)


def test_the_server_holds_nothing_that_reveals_an_individual_vector():
    rng = np.random.default_rng(1)
    vectors = {i: rng.uniform(-0.5, 0.5, 2000).astype(np.float32) for i in range(1, 7)}
    clients = {i: SecAggClient(i, 4, CODEC) for i in vectors}
    server = SecAggServer(4, CODEC)
    keys = server.collect_keys({i: c.advertise() for i, c in clients.items()})
    for i, c in clients.items():
        server.route_shares(i, c.share_keys(keys))
    for i, c in clients.items():
        y = c.masked_input(vectors[i], server.shares_for(i))
        plain = CODEC.encode(vectors[i]).astype(np.float64)
        # a masked input is uniform on [0, 2^32), uncorrelated with the input: both within
        # five standard errors (the masks come from fresh random keys every run, so a
        # three-error bound failed about once in a hundred runs)
        standard_error = (1 / (12 * y.size)) ** 0.5  # of the mean of U(0, 1) draws
        assert abs(np.corrcoef(y.astype(np.float64), plain)[0, 1]) < 5 / y.size**0.5
        assert abs(y.astype(np.float64).mean() / 2**32 - 0.5) < 5 * standard_error
        server.collect_masked(i, y)
    # the server keeps only the running sum of masked inputs, never one device's
    assert not any(
        isinstance(v, np.ndarray) and v is not server.total for v in vars(server).values()
    )
    # the shares it routed are ciphertexts: their plaintext header never shows
    for recipient, box in server.mailbox.items():
        for sender, blob in box.items():
            assert f"{sender},{recipient},".encode() not in blob


def test_a_device_never_reveals_both_secrets_of_one_peer():
    client = SecAggClient(1, 2, CODEC)
    with pytest.raises(BadPayload):
        client.reveal({2}, {2})


def test_a_forged_share_is_rejected():
    clients = {i: SecAggClient(i, 2, CODEC) for i in (1, 2, 3)}
    keys = {i: c.advertise() for i, c in clients.items()}
    shares = {i: c.share_keys(keys) for i, c in clients.items()}
    incoming = {2: shares[2][1][:-1] + bytes([shares[2][1][-1] ^ 1]), 3: shares[3][1]}
    with pytest.raises(BadPayload, match="authentication"):
        clients[1].masked_input(np.zeros(4, np.float32), incoming)
