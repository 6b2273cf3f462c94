"""Inception-v3 FID/KID as users compare them: torchvision's ImageNet weights, found where torchvision keeps
them (the torch hub cache) or fetched there once, with one notice instead of a score where neither works.

    path, why = find_weights()            # (Path, "") or (None, "why not, and how to get them")
    extractor = inception_extractor(path)

The file is `$TORCH_HOME/hub/checkpoints/inception_v3_google-0cc3c7bd.pth` (TORCH_HOME defaults to
~/.cache/torch), the file `torchvision.models.inception_v3(weights="DEFAULT")` downloads. A download is tried
once, bounded by DGEN_INCEPTION_TIMEOUT seconds (default 30), written to a temporary file, checked against the
sha256 prefix in its name (as torch.hub does) and renamed into place, so processes sharing the cache never read
a partial file. DGEN_INCEPTION_DOWNLOAD=0 never tries (an offline cluster whose network drops packets).

Preparation (`dgen.eval.fid.InceptionFeatures`): images are quantised to 8 bits (generated images scored as
their saved PNGs would be), resized to 299 px by antialiased bicubic interpolation (the PIL-style resize
clean-fid uses) and fed in [-1, 1], the range Google's weights expect; gray is repeated to RGB. These are
"FID (Inception v3, torchvision weights)": close to, not equal to, the TensorFlow Inception of published FIDs
(torch-fidelity and clean-fid port that graph; its weights are another file).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

log = logging.getLogger(__name__)

URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"  # Inception_V3_Weights.IMAGENET1K_V1
FILE = Path(urlparse(URL).path).name
GET = ("python -c \"from torchvision.models import inception_v3; inception_v3(weights='DEFAULT')\" on a machine "
       "with internet, then copy {path} to the same path on the machine that runs dgen (or into its $TORCH_HOME/hub/checkpoints/), or pass "
       "--inception-weights FILE; --no-inception silences this")


def cached_path() -> Path:
    """Where torchvision keeps (and looks for) the weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FILE


def _download(path: Path, timeout: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = re.search(r"-([a-f0-9]+)\.", FILE).group(1)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=FILE + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(URL, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(prefix):
            raise OSError(f"the download's sha256 does not start with {prefix}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def find_weights(download: bool | None = None) -> tuple[Path | None, str]:
    """(path of torchvision's Inception-v3 weights, "") where they are cached or could be downloaded now; else
    (None, a sentence saying why and how to get them). `download`: None follows DGEN_INCEPTION_DOWNLOAD."""
    path = cached_path()
    if path.is_file():
        return path, ""
    if download is None:
        download = os.environ.get("DGEN_INCEPTION_DOWNLOAD", "1") != "0"
    if not download:
        return None, f"torchvision's Inception-v3 weights are not in {path} (downloads off). To get them: " + \
            GET.format(path=path)
    timeout = float(os.environ.get("DGEN_INCEPTION_TIMEOUT", "30"))
    try:
        log.info("downloading torchvision's Inception-v3 weights (%s, 104 MB) into %s", URL, path.parent)
        _download(path, timeout)
        return path, ""
    except Exception as e:  # no network, a proxy, a full disk: a notice, never a traceback
        return None, (f"torchvision's Inception-v3 weights are not in {path} and could not be downloaded "
                      f"({type(e).__name__}: {e}). To get them: " + GET.format(path=path))


def weights_id(path: Path) -> str:
    """A key for the reference-statistics cache: the file's name, size and the sha256 of its first and last MiB
    (hashing all 104 MB at each start would cost a second for nothing)."""
    size = path.stat().st_size
    h = hashlib.sha256(f"{path.name}:{size}".encode())
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()[:16]
