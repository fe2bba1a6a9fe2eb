"""Avatars in object storage shared by two real ``lipcore serve`` workers (separate data
directories = separate caches), with moto's S3 server mode on loopback behind a TCP proxy that
the test can cut (object storage unreachable half-way through a build's upload).

Started once for the module: moto, the proxy, two workers behind HAProxy.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import websockets

from lipcore.testing_cluster import LocalCluster, free_port, start_moto

BUCKET = "lipcore-test"
PREFIX = "shared"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
         "AWS_DEFAULT_REGION": "us-east-1"}


class CutProxy:
    """A TCP proxy to ``port`` on loopback. ``cut_after(n)``: once ``n`` more bytes went
    upstream, every connection is dropped and new ones are refused until :meth:`restore`."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = free_port()
        self.sent = 0
        self.limit: int | None = None
        self.down = False
        self._conns: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve() -> None:
            await asyncio.start_server(self._handle, "127.0.0.1", self.port)
            ready.set()

        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, serve: Any) -> None:
        self.loop.run_until_complete(serve())
        self.loop.run_forever()

    def cut_after(self, n: int) -> None:
        self.limit = self.sent + n

    def restore(self) -> None:
        self.limit = None
        self.down = False

    def _cut(self) -> None:
        self.down = True
        for w in list(self._conns):
            w.transport.abort()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await r.read(16384):
                if up:
                    if self.limit is not None and self.sent + len(data) > self.limit:
                        self._cut()
                        return
                    self.sent += len(data)
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.transport.abort()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self._conns.update((writer, uw))
        try:
            await asyncio.gather(self._pipe(reader, uw, True), self._pipe(ur, writer, False))
        finally:
            self._conns.discard(writer)
            self._conns.discard(uw)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    proc, url = start_moto()
    try:
        yield url
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def proxy(moto: str) -> Iterator[CutProxy]:
    p = CutProxy(int(moto.rsplit(":", 1)[1]))
    yield p
    p.close()


@pytest.fixture(scope="module")
def s3(moto: str) -> Any:
    client = boto3.client("s3", endpoint_url=moto, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, proxy: CutProxy,
            s3: Any) -> Iterator[LocalCluster]:
    env = {**CREDS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    with LocalCluster(tmp_path_factory.mktemp("s3-workers"), workers_n=2,
                      separate_data_dirs=True, env=env,
                      extra_args=["--avatar-storage", f"s3://{BUCKET}/{PREFIX}"]) as c:
        yield c


def _keys(s3: Any, prefix: str) -> list[str]:
    out = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/{prefix}")
    return [o["Key"] for o in out.get("Contents", [])]


def _build(url: str, photo: Path) -> httpx.Response:
    with photo.open("rb") as fh:
        return httpx.post(f"{url}/w/w1/avatarize-2d", files={"hero_image": ("p.jpg", fh)},
                          data={"backend": "sprites"}, timeout=180)


@pytest.fixture(scope="module")
def built(cluster: LocalCluster, grace_hopper_path: Path) -> dict[str, Any]:
    r = _build(cluster.url, grace_hopper_path)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_an_avatar_built_on_one_worker_is_served_by_another(
        cluster: LocalCluster, built: dict[str, Any], s3: Any) -> None:
    avatar_id = built["avatar_id"]
    assert f"{PREFIX}/published/{avatar_id}.json" in _keys(s3, "published/")
    w2_cache = cluster.data_dir / "w2" / "avatars" / avatar_id
    assert not w2_cache.exists()  # w2 has never seen it
    listed = httpx.get(f"{cluster.url}/w/w2/avatars").json()["avatars"]
    assert [a["avatar_id"] for a in listed] == [avatar_id]
    assert (w2_cache / "manifest.json").is_file()  # fetched into w2's cache
    # Assets from the cache, with the same ETag on both workers, ranges and 304s.
    # The versioned URL the description hands out (/avatars/<id>/v/<version>/files/<rel>):
    # the version is the same on both workers, so w2 serves it as immutable too.
    tail = built["idle_url"].split("/w/w1", 1)[1]
    assert tail.startswith(f"/avatars/{avatar_id}/v/")
    a1 = httpx.get(f"{cluster.url}/w/w1{tail}")
    a2 = httpx.get(f"{cluster.url}/w/w2{tail}")
    assert a1.status_code == a2.status_code == 200 and a1.content == a2.content
    assert a1.headers["etag"] == a2.headers["etag"]
    assert "immutable" in a2.headers["cache-control"]
    r = httpx.get(f"{cluster.url}/w/w2{tail}", headers={"range": "bytes=10-99"})
    assert r.status_code == 206 and r.content == a1.content[10:100]
    r = httpx.get(f"{cluster.url}/w/w2{tail}", headers={"if-none-match": a1.headers["etag"]})
    assert r.status_code == 304
    # And a session on w2 speaks with it.

    async def speak() -> None:
        r = httpx.post(f"{cluster.url}/w/w2/session-2d",
                       json={"avatar_id": avatar_id, "voice_id": "en"})
        assert r.status_code == 200, r.text
        async with websockets.connect(r.json()["ws_url"]) as ws:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert hello["type"] == "hello" and hello["session_id"].startswith("s_w2.")
            await ws.send(json.dumps({"type": "speak", "text": "Built on one, spoken here."}))
            while True:
                m = await asyncio.wait_for(ws.recv(), 15)
                if isinstance(m, str) and json.loads(m)["type"] == "utterance_end":
                    break

    asyncio.run(speak())


def test_storage_unreachable_mid_build_is_a_clear_error_and_nothing_half_written(
        cluster: LocalCluster, built: dict[str, Any], proxy: CutProxy, s3: Any,
        grace_hopper_path: Path) -> None:
    before = set(_keys(s3, "avatars/"))
    # Let the first ~40 kB of the upload through, then the storage vanishes mid-upload.
    proxy.cut_after(40_000)
    try:
        r = _build(cluster.url, grace_hopper_path)
    finally:
        proxy.restore()
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["error"] == "storage_unavailable"
    assert "not published" in body["detail"] and "build it again" in body["detail"]
    # It failed half-way: some files of the new avatar reached the store...
    stray = set(_keys(s3, "avatars/")) - before
    assert stray, "the cut came before any file was written; the test proves nothing"
    # ... but nothing of it is published, listed or left in the builder's cache.
    assert _keys(s3, "published/") == [f"{PREFIX}/published/{built['avatar_id']}.json"]
    for w in ("w1", "w2"):
        listed = httpx.get(f"{cluster.url}/w/{w}/avatars").json()["avatars"]
        assert [a["avatar_id"] for a in listed] == [built["avatar_id"]]
    local = sorted(p.name for p in (cluster.data_dir / "w1" / "avatars").iterdir())
    assert local == [built["avatar_id"]]
    stray_id = next(iter(stray)).split("/")[2]
    r = httpx.get(f"{cluster.url}/w/w2/avatars/{stray_id}")
    assert r.status_code == 404


def test_unknown_storage_scheme_is_a_clear_error(tmp_path: Path) -> None:
    from lipcore.errors import LipcoreError
    from lipcore.server.storage import open_storage

    with pytest.raises(LipcoreError, match="no avatar storage for 'gs'"):
        open_storage("gs://bucket/x")
    assert open_storage(None) is None
    assert type(open_storage("s3://b/p")).__name__ == "S3AvatarStorage"

