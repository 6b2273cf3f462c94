"""Reading a remote shard or manifest whole, in bounded time: `http(s)://` with urllib, `pipe:` through the shell.

    fetch("http://head:8000/mnist/train-000003.tar")             # bytes, or RemoteError saying why
    fetch("pipe:aws s3 cp s3://bucket/mnist/train-000003.tar -")

A shard is read whole into memory before its samples are served (dgen's shards hold 1,000 samples, 1-30 MB):
its sha256 is checked on those bytes, and the shard's samples can then be taken in any order. A server or
command that sends nothing for DGEN_REMOTE_TIMEOUT seconds (default 60) is an error, never a hang: the training
stream skips and counts that shard, an evaluation fails naming it. HTTP answers that say "try again" (5xx, 429)
and dropped connections are retried DGEN_REMOTE_RETRIES times (default 2) after 1, 2, 4 ... s; the rest (404,
a refused connection, a command's non-zero exit) fail at once. Other schemes webdataset knows (gs://, hf://,
ais://) go through webdataset's gopen, without these bounds.
"""

from __future__ import annotations

import http.client
import os
import select
import subprocess
import time
import urllib.error
import urllib.request

CHUNK = 1 << 20


class RemoteError(OSError):
    """A remote read that failed or stalled; the message names the location and the cause."""


def timeout_s() -> float:
    return float(os.environ.get("DGEN_REMOTE_TIMEOUT", "60"))


def retries() -> int:
    return int(os.environ.get("DGEN_REMOTE_RETRIES", "2"))


def fetch(url: str) -> bytes:
    """The whole content at `url` (http(s)://, pipe:COMMAND, or another webdataset scheme)."""
    if url.startswith("pipe:"):
        return _pipe(url[5:], url)
    if url.startswith(("http://", "https://")):
        return _http(url)
    import webdataset as wds

    try:
        with wds.gopen(url, "rb") as f:
            return f.read()
    except Exception as e:  # gopen raises many kinds (IOError, ValueError, subprocess errors)
        raise RemoteError(f"{url}: {e}") from None


def _http(url: str) -> bytes:
    pause = 1.0
    for attempt in range(retries() + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s()) as response:
                expected = response.headers.get("Content-Length")
                data = response.read()
            if expected is not None and len(data) != int(expected):
                raise ConnectionError(f"the connection closed after {len(data)} of {expected} bytes")
            return data
        except urllib.error.HTTPError as e:
            why, again = f"HTTP {e.code} {e.reason}", e.code >= 500 or e.code == 429
        except (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            why = f"no data for {timeout_s():g} s (DGEN_REMOTE_TIMEOUT)" if isinstance(reason, TimeoutError) \
                else f"the connection closed early ({type(reason).__name__})" \
                if isinstance(reason, http.client.IncompleteRead) else str(reason)
            again = not isinstance(reason, ConnectionRefusedError) and "Name or service" not in why
        if not again or attempt == retries():
            tries = f" (after {attempt + 1} tries)" if attempt else ""
            raise RemoteError(f"{url}: {why}{tries}")
        time.sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")


def _pipe(command: str, url: str) -> bytes:
    proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    out, err, limit = [], b"", timeout_s()
    try:
        open_fds = {proc.stdout.fileno(), proc.stderr.fileno()}
        while proc.stdout.fileno() in open_fds:  # stderr is read too, so a chatty command never blocks on it
            ready, _, _ = select.select(list(open_fds), [], [], limit)
            if not ready:
                raise RemoteError(f"{url}: the command wrote nothing for {limit:g} s (DGEN_REMOTE_TIMEOUT); stopped it")
            for fd in ready:
                chunk = os.read(fd, CHUNK)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == proc.stdout.fileno():
                    out.append(chunk)
                else:
                    err = (err + chunk)[-4096:]
        try:
            status = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{url}: the command closed its output but did not exit within {limit:g} s") from None
        if status != 0:
            if proc.stderr.fileno() in open_fds:
                err = (err + proc.stderr.read())[-4096:]
            last = err.decode(errors="replace").strip().splitlines()
            raise RemoteError(f"{url}: the command exited with status {status}" + (f": {last[-1]}" if last else ""))
        return b"".join(out)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def head_size(url: str) -> int | None:
    """The size an http(s) server reports for `url` (a HEAD request; None if it does not say); RemoteError if it
    has no such file or does not answer within DGEN_REMOTE_TIMEOUT."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s()) as response:
            size = response.headers.get("Content-Length")
    except urllib.error.HTTPError as e:
        raise RemoteError(f"HTTP {e.code} {e.reason}") from None
    except (OSError, http.client.HTTPException) as e:
        raise RemoteError(str(getattr(e, "reason", e))) from None
    return int(size) if size is not None else None
