"""Compact model downloads against the real app on 127.0.0.1: the int8 model decodes within
its bound of the float32 one, ETag and Range work for every encoding, an old client gets
float32, and a device trains from a compact download and its update is accepted."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from edge_sdk.protocol import BadChecksum, MalformedHeader, decode_model, decode_parameters

from .fleet import good_state, server_with_task

SETTINGS = {
    "mode": "async",
    "async": {"buffer_size": 1},
    "plan": {"epochs": 1, "batch_size": 4, "lr": 0.5},
}


def test_compact_downloads_keep_etag_range_and_the_float32_default(bundle, tmp_path, store_url):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS, store_url=store_url) as env:
            phone = await env.enroll(0)
            auth = {"Authorization": f"Bearer {phone.transport.token}"}
            model = env.url + "/v1/tasks/kb/model"
            bodies, etags = {}, {}
            for query in ("", "?encoding=f32", "?encoding=q8", "?encoding=f16"):
                async with env.session.get(model + query, headers=auth) as r:
                    assert r.status == 200, await r.text()
                    bodies[query], etags[query] = await r.read(), r.headers["ETag"]
                    assert r.headers["X-Model-Version"] == "0"
                async with env.session.get(
                    model + query, headers=auth | {"If-None-Match": etags[query]}
                ) as r:
                    assert r.status == 304
                async with env.session.get(
                    model + query, headers=auth | {"Range": "bytes=10-99"}
                ) as r:
                    assert r.status == 206
                    assert await r.read() == bodies[query][10:100]
            # an old client asking nothing gets the float32 frame its decoder reads
            assert bodies[""] == bodies["?encoding=f32"]
            _, exact = decode_parameters(bodies[""], bundle.parameter_specs)
            header, q8 = decode_model(bodies["?encoding=q8"], bundle.parameter_specs)
            assert header["encoding"] == "q8" and header["model_version"] == 0
            assert len(bodies["?encoding=q8"]) * 3.5 < len(bodies[""])
            for name, x in exact.items():
                flat = x.reshape(-1)
                pad = np.zeros(-(-flat.size // 256) * 256, np.float32)
                pad[: flat.size] = np.abs(flat)
                bound = np.repeat(pad.reshape(-1, 256).max(axis=1) / 254, 256)[: flat.size]
                assert np.all(np.abs(q8[name].reshape(-1) - flat) <= bound * (1 + 1e-5) + 1e-12)
            # the served file is made once: a second request is the same file (same ETag)
            async with env.session.get(model + "?encoding=q8", headers=auth) as r:
                assert r.headers["ETag"] == etags["?encoding=q8"]
            async with env.session.get(model + "?encoding=q3", headers=auth) as r:
                assert r.status == 400

    asyncio.run(scenario())


def test_a_device_trains_from_a_compact_download_and_its_update_is_accepted(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:
            phone = await env.enroll(0)
            assert phone.client.download_encoding == "q8"
            result = await phone.client.participate(good_state, "kb")
            assert result.status == "completed", result
            assert result.server["status"] == "accepted"
            f32 = env.service.model_file("kb", 0)[1].stat().st_size
            assert result.bytes_down * 3.5 < f32
            assert env.service.participation.table.tasks["kb"].coordinator.version == 1

    asyncio.run(scenario())


def test_a_corrupted_compact_model_is_refused_by_the_sdk(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:
            phone = await env.enroll(0)
            _, path = env.service.model_file("kb", 0, False, "q8")
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            with pytest.raises(BadChecksum):
                await phone.client.participate(good_state, "kb")

    asyncio.run(scenario())


def _half_steps(x: np.ndarray, chunk: int, steps: int) -> np.ndarray:
    """max |x| / steps over each chunk of x, per value: a nearest quantizer's bound."""
    flat = np.abs(x.reshape(-1))
    pad = np.zeros(-(-flat.size // chunk) * chunk, np.float32)
    pad[: flat.size] = flat
    return np.repeat(pad.reshape(-1, chunk).max(axis=1) / steps, chunk)[: flat.size]


def test_a_returning_device_gets_a_difference_from_its_whole_download(bundle, tmp_path, store_url):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS, store_url=store_url) as env:
            phones = [await env.enroll(i) for i in range(2)]
            first = await phones[0].client.participate(good_state, "kb")  # v0 whole, -> v1
            assert first.server["status"] == "accepted" and first.bytes_down > 0
            await phones[1].client.participate(good_state, "kb")  # -> v2
            again = await phones[0].client.participate(good_state, "kb")  # v2 from v0
            assert again.status == "completed" and again.server["status"] == "accepted"
            assert 0 < again.bytes_down < first.bytes_down * 0.6, (
                again.bytes_down,
                first.bytes_down,
            )

            auth = {"Authorization": f"Bearer {phones[0].transport.token}"}
            model = env.url + "/v1/tasks/kb/model"

            async def get(query, headers=None):
                async with env.session.get(model + query, headers=auth | (headers or {})) as r:
                    return r.status, await r.read(), r.headers

            _, whole0, _ = await get("?version=0&encoding=q8")
            _, base = decode_model(whole0, bundle.parameter_specs)
            status, diff, headers = await get("?version=2&encoding=q8&base=0")
            assert status == 200
            _, exact = decode_parameters((await get("?version=2"))[1], bundle.parameter_specs)
            header, got = decode_model(diff, bundle.parameter_specs, base=(0, base))
            assert header["base_version"] == 0 and header["model_version"] == 2
            for name, x in exact.items():  # int4 with a scale per 64 values
                bound = _half_steps(x - base[name], 64, 14)
                assert np.all(np.abs(got[name] - x).reshape(-1) <= bound * (1 + 1e-4) + 1e-7)
            with pytest.raises(MalformedHeader):  # a difference needs its base
                decode_model(diff, bundle.parameter_specs)
            assert (await get("?version=2&encoding=q8&base=0", {"If-None-Match": headers["ETag"]}))[
                0
            ] == 304
            status, part, _ = await get("?version=2&encoding=q8&base=0", {"Range": "bytes=5-60"})
            assert status == 206 and part == diff[5:61]
            # a base the server cannot use (not older than the version): the whole model
            status, whole, _ = await get("?version=2&encoding=q8&base=7")
            assert "base_version" not in decode_model(whole, bundle.parameter_specs)[0]

    asyncio.run(scenario())


def test_encoded_files_survive_a_restart_and_temp_files_do_not(bundle, tmp_path):
    async def scenario():
        async with server_with_task(tmp_path, bundle, SETTINGS) as env:
            _, path = env.service.model_file("kb", 0, False, "q8")
            stray = path.with_name(path.name + ".123.456.tmp")  # a write cut short
            stray.write_bytes(b"x")
            made = path.stat().st_mtime_ns
        from edge_sdk.clock import FakeClock

        from .fleet import running_server

        async with running_server(tmp_path / "data", FakeClock()) as (_, service):
            assert path.exists() and not stray.exists()  # the sweep at start-up kept it
            assert path.stat().st_mtime_ns == made  # the same file: the same ETag
            assert service.model_file("kb", 0, False, "q8")[1] == path

    asyncio.run(scenario())
