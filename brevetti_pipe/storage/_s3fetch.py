"""Many small S3 objects into local files: presigned GET URLs fetched with aiohttp.

A ``get_object`` call through s3fs / aiobotocore costs about 1 ms of CPU in the calling
process (request building, signing, user agent, endpoint rules, response parsing), which on a
small training machine competes with image decoding. A presigned URL and a plain aiohttp GET
fetch the same bytes with the same credentials (SigV4) for a fraction of that. Even
``generate_presigned_url`` spends most of its time on endpoint rules and parameter handling
that are the same for every key of a bucket, so botocore presigns one probe key per bucket
and batch (endpoint, addressing style, credential scope), and the other keys of the batch are
signed by botocore's own SigV4 query signer on that URL layout (a test checks the URLs are
identical to ``generate_presigned_url``'s).
Used for plain S3 options only; anything it does not mirror (requester pays, SSE-C, proxies
in the botocore config or the environment, custom TLS verification) goes through ``fs.get``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import os
import random
import re
import ssl
import weakref
from collections.abc import Sequence
from typing import Any

from brevetti_pipe._util.retry import is_transient

#: s3fs options this path reproduces (credentials, endpoint, region, botocore config).
_SUPPORTED = {"endpoint_url", "key", "secret", "token", "anon", "profile", "config_kwargs", "client_kwargs",
              "skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_concurrency", "default_block_size"}
_QUERY = re.compile(r"\?\S*")
_ATTEMPTS = 5
_EXPIRES = 900  # seconds a presigned URL is valid: one batch, retries included
_jitter = random.Random()  # never the global RNG: frameworks draw their default seeds from it

_sessions: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()  # event loop -> aiohttp session


def supported(options: dict[str, Any]) -> bool:
    """True when ``options`` (s3fs storage options) need nothing this path does not mirror."""
    if set(options) - _SUPPORTED:
        return False
    if set(options.get("client_kwargs") or {}) - {"region_name", "endpoint_url"}:
        return False
    if any(os.environ.get(v) for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")):
        return False  # botocore's proxy rules (NO_PROXY, ...) are not reproduced here
    return "proxies" not in (options.get("config_kwargs") or {})


def _scrub(text: str) -> str:
    return _QUERY.sub("", text)  # a presigned query string is a credential


async def _session() -> Any:
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(loop)
    if session is None or session.closed:
        from botocore.httpsession import get_cert_path

        # the CA bundle botocore uses: AWS_CA_BUNDLE, else its default (certifi)
        tls = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True))
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=128, ttl_dns_cache=300, ssl=tls),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60),
            trust_env=False,  # proxies: see supported(); a per-request env lookup costs a thread hop
        )
        _sessions[loop] = session
    return session


class _Presigner:
    """Presigned GET URLs for the keys of one bucket, valid for ``_EXPIRES`` seconds from now.

    botocore presigns a probe key (endpoint rules, addressing style, credential scope); when
    that URL is ``<prefix><probe key>?<SigV4 query>`` and nothing else, other keys are signed by
    botocore's ``S3SigV4QueryAuth`` on ``<prefix><key>``, which is what
    ``generate_presigned_url`` does after its per-call endpoint and parameter work. Any other
    layout (versioned keys, unsigned or non-SigV4 clients) uses ``generate_presigned_url`` per key.
    """

    _PROBE = "brevetti-pipe-probe"
    _AUTH = {"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
             "X-Amz-Security-Token", "X-Amz-Signature"}

    def __init__(self, client: Any, bucket: str, prefix: str | None = None, auth: Any = None) -> None:
        self.client, self.bucket = client, bucket
        self.prefix, self.auth = prefix, auth  # both None: generate_presigned_url per key

    @classmethod
    async def create(cls, client: Any, bucket: str) -> _Presigner:
        from urllib.parse import parse_qs

        url = await client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": cls._PROBE}, ExpiresIn=_EXPIRES)
        base, _, query = url.partition("?")
        fields = parse_qs(query, keep_blank_values=True)
        scope = fields.get("X-Amz-Credential", [""])[0].split("/")
        signer = getattr(client, "_request_signer", None)
        if (base.endswith("/" + cls._PROBE) and set(fields) <= cls._AUTH and len(scope) == 5
                and fields.get("X-Amz-Algorithm") == ["AWS4-HMAC-SHA256"] and signer is not None):
            try:  # the client's own signer: same (refreshed) credentials, same signature version
                auth = await signer.get_auth_instance(scope[3], scope[2], signature_version="s3v4-query", expires=_EXPIRES)
            except Exception:  # an unusual signer: keep the per-key path
                pass
            else:
                return cls(client, bucket, base[: -len(cls._PROBE)], auth)
        return cls(client, bucket)

    async def url(self, key: str, version: str | None) -> str:
        if self.prefix is None or version:
            params = {"Bucket": self.bucket, "Key": key, **({"VersionId": version} if version else {})}
            return await self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=_EXPIRES)
        from botocore.awsrequest import AWSRequest
        from botocore.utils import percent_encode

        request = AWSRequest(method="GET", url=self.prefix + percent_encode(key, safe="/~"))
        self.auth.add_auth(request)
        return request.prepare().url


async def _get_one(session: Any, url: str, rpath: str, local: str) -> str | None:
    """One object, with per-request retries of transient faults (as botocore does for ``fs.get``)."""
    for attempt in range(_ATTEMPTS):
        try:
            return await _get_once(session, url, rpath, local)
        except Exception as exc:
            if attempt == _ATTEMPTS - 1 or not is_transient(exc):
                raise
            await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + _jitter.random()))
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _get_once(session: Any, url: str, rpath: str, local: str) -> str | None:
    """Write the object to ``local``; return the MD5 of the bytes when the object's ETag is an MD5
    (None for SSE-KMS and SSE-C objects, whose ETags are not)."""
    import aiohttp
    import yarl

    try:
        async with session.get(yarl.URL(url, encoded=True)) as response:
            status = response.status
            data = await response.read() if status == 200 else b""
            encrypted = ("x-amz-server-side-encryption-customer-algorithm" in response.headers
                         or response.headers.get("x-amz-server-side-encryption", "").startswith("aws:kms"))
    except aiohttp.ClientSSLError as exc:  # a certificate problem does not go away on retry
        raise OSError(f"s3://{rpath}: TLS: {_scrub(str(exc))}") from None
    except aiohttp.ClientError as exc:  # resets, refused and dropped connections: retried
        raise ConnectionError(f"s3://{rpath}: {type(exc).__name__}: {_scrub(str(exc))}") from None
    if status == 404:
        raise FileNotFoundError(f"s3://{rpath}")
    if status in (401, 403):
        raise PermissionError(f"s3://{rpath}: HTTP {status} (access denied)")
    if status >= 500 or status == 429:
        raise ConnectionError(f"s3://{rpath}: HTTP {status} (service unavailable)")
    if status != 200:
        raise OSError(f"s3://{rpath}: HTTP {status}")
    with open(local, "wb") as f:
        f.write(data)
    return None if encrypted else hashlib.md5(data).hexdigest()


async def _get_all(fs: Any, rpaths: Sequence[str], locals_: Sequence[str]) -> list[BaseException | str | None]:
    session = await _session()
    presigners: dict[str, _Presigner] = {}
    urls = []
    for rpath in rpaths:  # signed together, right before the batch's requests
        bucket, key, version = fs.split_path(rpath)
        if bucket not in presigners:
            presigners[bucket] = await _Presigner.create(await fs.get_s3(bucket), bucket)
        urls.append(await presigners[bucket].url(key, version))
    return await asyncio.gather(*(_get_one(session, u, r, lp) for u, r, lp in zip(urls, rpaths, locals_)),
                                return_exceptions=True)


def get(fs: Any, rpaths: Sequence[str], locals_: Sequence[str]) -> list[BaseException | str | None]:
    """Fetch ``rpaths`` (bucket/key, no protocol) of s3fs filesystem ``fs`` into ``locals_``.

    Returns, per file, its error, or the MD5 of the bytes fetched when the object's ETag is an MD5
    (else None).
    """
    from fsspec.asyn import sync

    return sync(fs.loop, _get_all, fs, rpaths, locals_)


@atexit.register
def _close_sessions() -> None:
    for loop, session in list(_sessions.items()):
        if not session.closed and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(session.close(), loop).result(timeout=2)
