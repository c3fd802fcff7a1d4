#!/usr/bin/env python
"""Download CIFAR-10/100 and STL-10 from their official URLs, verify md5, extract safely, resume.

python scripts/download_data.py {cifar10,cifar100,stl10,all} --root DIR [--base-url URL]

Downloads go to DIR/<file>.part (resumed with an HTTP Range request), are checked against the official
md5, renamed, and extracted only if no member has an absolute path, a '..' component, or a link
pointing outside DIR. Already-extracted datasets are skipped. User errors: one line, exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", "cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
    "stl10": ("http://ai.stanford.edu/~acoates/stl10/", "stl10_binary.tar.gz",
              "91f7769df0f17e558f3565bffb0c7dfb", "stl10_binary"),
}


class DownloadError(Exception):
    pass


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _progress(done: int, total: int | None, name: str) -> None:
    if total:
        width = 30
        filled = int(width * done / total)
        print(f"\r{name} [{'#' * filled}{'.' * (width - filled)}] {done / 2**20:.1f}/{total / 2**20:.1f} MB",
              end="", file=sys.stderr, flush=True)
    else:
        print(f"\r{name} {done / 2**20:.1f} MB", end="", file=sys.stderr, flush=True)


def fetch(url: str, dest: Path) -> Path:
    """Download url to dest, resuming dest.part if present."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:       # nothing left to fetch: the part file is complete
            part.rename(dest)
            return dest
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"downloading {url} failed: {exc}; check the network and run the command again "
                            f"(it resumes)") from None
    with response:
        resumed = have and response.status == 206
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as fh:
            done = have
            while chunk := response.read(1 << 16):
                fh.write(chunk)
                done += len(chunk)
                _progress(done, total, dest.name)
    print(file=sys.stderr)
    part.rename(dest)
    return dest


def safe_members(tar: tarfile.TarFile, root: Path):
    root = root.resolve()
    for member in tar.getmembers():
        name = member.name
        if name.startswith(("/", "\\")) or ".." in Path(name).parts:
            raise DownloadError(f"refusing to extract {name!r}: absolute path or '..' in the archive")
        if not (root / name).resolve().is_relative_to(root):
            raise DownloadError(f"refusing to extract {name!r}: it points outside {root}")
        if member.issym() or member.islnk():
            target = (root / name).parent / member.linkname
            if os.path.isabs(member.linkname) or not target.resolve().is_relative_to(root):
                raise DownloadError(f"refusing to extract link {name!r} -> {member.linkname!r}: outside {root}")
        if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
            raise DownloadError(f"refusing to extract {name!r}: not a regular file or directory")
        yield member


def download(name: str, root: Path, base_url: str | None = None) -> Path:
    base, filename, md5, folder = SOURCES[name]
    root.mkdir(parents=True, exist_ok=True)
    if (root / folder).is_dir():
        print(f"{name}: {root / folder} already exists; skipping")
        return root / folder
    archive = root / filename
    if not archive.exists():
        fetch((base_url or base).rstrip("/") + "/" + filename, archive)
    digest = md5sum(archive)
    if digest != md5:
        bad = archive.with_name(archive.name + ".bad")
        archive.rename(bad)
        raise DownloadError(f"{filename}: md5 {digest} does not match the official {md5}; the file was moved to "
                            f"{bad} and nothing was extracted - run the command again to download it afresh")
    with tarfile.open(archive) as tar:
        members = list(safe_members(tar, root))     # check everything before writing anything
        tar.extractall(root, members=members)
    print(f"{name}: extracted to {root / folder}")
    return root / folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Download CIFAR-10/100 and STL-10.")
    p.add_argument("dataset", choices=[*SOURCES, "all"])
    p.add_argument("--root", default="./data")
    p.add_argument("--base-url", help="mirror serving the same file names (default: the official sites)")
    args = p.parse_args(argv)
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    try:
        for name in names:
            download(name, Path(args.root), args.base_url)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
