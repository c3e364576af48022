"""A device's connection to an aggregator: enroll once, keep the identity, hand out clients.

    async with edge_sdk.connect(url, "keyboard", secret, store) as server:
        client = server.client(bundle, ClientConfig(collection="typed"))
        result = await client.participate(device_state)

The first connection enrolls (a fresh Ed25519 signing key; the server answers with a
device id and a bearer token) and keeps that identity in the example store's state,
under a key naming the server and the population; later connections, also after a
restart, reuse it and do not enroll again. The identity (signing key and token) is as
safe as the store's file: an app that wants more keeps the store in its private storage.
"""

from __future__ import annotations

import json
from typing import Self

import aiohttp
import numpy as np

from .bundle import Bundle
from .client import DeviceIdentity, FederatedClient, LocalTraining
from .config import ClientConfig
from .errors import StoreError
from .example_store import ExampleStore
from .protocol import decode_parameters, generate_signing_key, public_key_of
from .transport import RetryPolicy, Transport

IDENTITY_KEY = "sdk.identity.{population}@{url}"
_RETRY = RetryPolicy()
_CONFIG = ClientConfig()


class Connection:
    """A connection to the aggregator at `url` for a device of `population`, enrolled
    with `secret` the first time (later it re-uses the identity kept in `store`) once
    opened: `async with` it, or `await` it and `close()` when done. One HTTP session
    serves every client made."""

    def __init__(
        self,
        url: str,
        population: str,
        secret: str,
        store: ExampleStore,
        *,
        retry: RetryPolicy = _RETRY,
        session: aiohttp.ClientSession | None = None,
    ):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be the aggregator's http(s):// address, got {url!r}")
        if not population or not secret:
            raise ValueError("population and secret are the enrollment's: both are needed")
        self.url, self.population, self.secret, self.store = (
            url.rstrip("/"),
            population,
            secret,
            store,
        )
        self.retry = retry
        self._session, self._own_session = session, session is None
        self.transport: Transport | None = None
        self.identity: DeviceIdentity | None = None
        self.enrolled_now = False  # True: this connection enrolled (no stored identity)

    @property
    def device_id(self) -> str:
        return self._opened().device_id

    async def open(self) -> Self:
        if self.transport is not None:
            return self
        if self._session is None:
            self._session = aiohttp.ClientSession()
        transport = Transport(self.url, self._session, retry=self.retry)
        key = IDENTITY_KEY.format(population=self.population, url=self.url)
        kept = _read_identity(self.store.get_state(key))
        try:
            if kept is None:
                signing_key = generate_signing_key()
                doc = await transport.enroll(
                    self.population, self.secret, public_key_of(signing_key)
                )
                kept = {
                    "device_id": doc["device_id"],
                    "token": doc["token"],
                    "signing_key": signing_key.hex(),
                }
                self.store.put_state(key, json.dumps(kept).encode())
                self.enrolled_now = True
        except BaseException:
            await self.close()
            raise
        transport.token, transport.device_id = kept["token"], kept["device_id"]
        self.transport = transport
        self.identity = DeviceIdentity(kept["device_id"], bytes.fromhex(kept["signing_key"]))
        return self

    def forget(self) -> None:
        """Drop the stored identity: the next `open` enrolls anew (e.g. after the server
        answered 401 unauthorized: it no longer knows this device)."""
        self.store.delete_state(IDENTITY_KEY.format(population=self.population, url=self.url))
        self.identity = None

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
        self.transport = None

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __await__(self):
        return self.open().__await__()

    def client(self, bundle: Bundle, config: ClientConfig = _CONFIG) -> FederatedClient:
        """A client that trains `bundle` on the store's `config.collection` when the
        server assigns it; `await client.participate(device_state, task_id=None)` runs
        one participation and returns its result (`result.outcome`, a Participation)."""
        identity = self._opened()
        rng = np.random.default_rng(config.seed)
        return FederatedClient(
            bundle,
            self.transport,
            self.store,
            identity,
            policy=config.policy,
            clock=config.clock,
            rng=rng,
            collection=config.collection,
            pipeline=config.pipeline,
            eval_collection=config.eval_collection,
            training=LocalTraining(bundle, config.clock, in_thread=config.train_in_thread),
        )

    async def current_model(
        self, bundle: Bundle, task_id: str, version: int | None = None
    ) -> tuple[int, dict[str, np.ndarray]]:
        """(version, parameters) of the task's current global model (or of `version`),
        e.g. for a Predictor; float32 arrays of the bundle's parameter shapes."""
        self._opened()
        header, arrays = decode_parameters(
            await self.transport.download_model(task_id, version), bundle.parameter_specs
        )
        return header["model_version"], arrays

    def _opened(self) -> DeviceIdentity:
        if self.identity is None or self.transport is None:
            raise RuntimeError(
                "the connection is not open: `async with edge_sdk.connect(...) "
                "as server:` or `server = await edge_sdk.connect(...)`"
            )
        return self.identity


# `edge_sdk.connect(url, population, secret, store)` is the class itself, so the
# signature and its defaults are written once
connect = Connection


def _read_identity(raw: bytes | None) -> dict | None:
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and all(
            isinstance(doc.get(k), str) for k in ("device_id", "token", "signing_key")
        ):
            bytes.fromhex(doc["signing_key"])
            return doc
    except ValueError:
        pass
    raise StoreError(
        "the stored device identity is damaged; wipe the store's state key "
        "'sdk.identity...' to enroll again"
    )
