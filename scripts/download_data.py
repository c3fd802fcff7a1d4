#!/usr/bin/env python
"""Download CIFAR-10/100 and STL-10 from their official URLs, verify md5, extract safely, resume.

python scripts/download_data.py {cifar10,cifar100,stl10,all} --root DIR [--base-url URL]

Downloads go to DIR/<archive>.part (resumed with an HTTP Range request after an interruption), are
checked against the official md5 and renamed to DIR/<archive>. Extraction first checks every member
(no absolute path, no '..' component, no link pointing outside DIR, only files/dirs/links), unpacks into
a temporary directory inside DIR and renames the dataset folder into place, so a folder that exists is
complete; such a dataset is skipped. The archive is kept (delete it to save space).
Standard library only. User errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# name: (base URL, archive, md5, folder the archive contains). Tests point these at a local server.
SOURCES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/", "cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
    "stl10": ("http://ai.stanford.edu/~acoates/stl10/", "stl10_binary.tar.gz",
              "91f7769df0f17e558f3565bffb0c7dfb", "stl10_binary"),
}
CHUNK = 1 << 16


class DownloadError(Exception):
    """A problem the user can act on; main() prints it on one line and exits with code 2."""


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Progress:
    """A one-line progress bar on stderr, redrawn at most every 0.2 s."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.last = name, total, 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        mb = done / 2 ** 20
        if self.total:
            filled = int(30 * done / self.total)
            line = f"{self.name} [{'#' * filled}{'.' * (30 - filled)}] {mb:.1f}/{self.total / 2 ** 20:.1f} MB"
        else:
            line = f"{self.name} {mb:.1f} MB"
        print("\r" + line, end="", file=sys.stderr, flush=True)

    def close(self, done: int) -> None:
        self.update(done, force=True)
        print(file=sys.stderr, flush=True)


def fetch(url: str, dest: Path) -> Path:
    """Download url to dest through dest.part, resuming a .part left by an interrupted run."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:       # nothing left to fetch: the part file is complete
            part.rename(dest)
            return dest
        raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"downloading {url} failed: {getattr(exc, 'reason', exc)}; check the network "
                            f"and run the command again (it resumes)") from None
    with response:
        # 206 answers our single range (its Content-Range, when sent, must start at `have`); 200 is the
        # whole file from byte 0
        content_range = response.headers.get("Content-Range")
        resumed = bool(have) and response.status == 206
        if resumed and content_range and not content_range.startswith(f"bytes {have}-"):
            response.close()
            print(f"{dest.name}: the server answered {content_range!r} to a resume at byte {have}; "
                  f"downloading from the start", file=sys.stderr)
            part.unlink()
            return fetch(url, dest)
        if have and not resumed:
            print(f"{dest.name}: the server does not resume downloads; downloading from the start",
                  file=sys.stderr)
            have = 0
        length = response.headers.get("Content-Length")
        progress = Progress(dest.name, have + int(length) if length else None)
        done = have
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while chunk := response.read(CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    progress.update(done)
        except (OSError, urllib.error.URLError) as exc:
            progress.close(done)
            raise DownloadError(f"downloading {url} stopped after {done} bytes ({exc}); run the command again "
                                f"to resume") from None
        progress.close(done)
    if length and done != have + int(length):
        raise DownloadError(f"downloading {url} stopped after {done} of {have + int(length)} bytes; run the "
                            f"command again to resume")
    part.rename(dest)
    return dest


_MAX_LINK_HOPS = 40      # like the kernel's ELOOP limit


def _parts(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _resolve(parts: tuple[str, ...], links: dict, hops: int = 0) -> tuple[str, ...] | None:
    """Where `parts` (relative to the extraction root) really lands once the symlinks the archive has
    declared so far are followed, as components relative to the root; None when it leaves the root (or
    loops). The target directory starts empty, so the archive's own links are all there is."""
    here: list[str] = []
    for i, part in enumerate(parts):
        if part == "..":
            if not here:
                return None
            here.pop()
            continue
        here.append(part)
        target = links.get(tuple(here))
        if target is not None:
            if hops >= _MAX_LINK_HOPS:
                return None
            return _resolve(target + parts[i + 1:], links, hops + 1)
    return tuple(here)


def check_members(tar: tarfile.TarFile, root: Path, shown: Path | None = None) -> list[tarfile.TarInfo]:
    """Every member of the archive, or DownloadError naming the first one that could reach outside
    `root` (`shown`: the directory to name in the message, default root). Each member's final path is
    resolved through the links declared before it (a chain like `a -> .`, `a/b -> ..` is caught), every
    link is checked again against the final set of links, and only regular files, directories and links
    that stay inside are allowed (no devices, FIFOs, absolute paths or '..')."""
    shown = shown or root
    members = tar.getmembers()
    links: dict[tuple[str, ...], tuple[str, ...]] = {}      # symlink location -> its target, from the root
    owner: dict[tuple[str, ...], tarfile.TarInfo] = {}      # symlink location -> its member

    def outside_link(member):
        return DownloadError(f"refusing to extract link {member.name!r} -> {member.linkname!r}: it points "
                             f"outside {shown}")

    for member in members:
        name = member.name
        if (name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in _parts(name) or "\x00" in name
                or (len(name) > 1 and name[1] == ":") or not _parts(name)):
            raise DownloadError(f"refusing to extract {name!r}: absolute path or '..' in the archive")
        parts = _parts(name)
        parent = _resolve(parts[:-1], links)
        if parent is None:
            raise DownloadError(f"refusing to extract {name!r}: it points outside {shown}")
        where = parent + parts[-1:]
        if member.issym() or member.islnk():
            target = member.linkname
            if os.path.isabs(target) or target.startswith(("/", "\\")) or "\x00" in target:
                raise outside_link(member)
            # a symlink's target is relative to its own directory, a hard link's to the archive root
            full = (parent if member.issym() else ()) + tuple(p for p in target.replace("\\", "/").split("/")
                                                              if p not in ("", "."))
            links.pop(where, None)          # the new link replaces whatever was at its place
            if _resolve(full, links) is None:
                raise outside_link(member)
            if member.issym():
                links[where], owner[where] = full, member
        elif member.isfile() or member.isdir():
            if _resolve(where, links) is None:      # a file written through an existing link
                raise DownloadError(f"refusing to extract {name!r}: it points outside {shown}")
            member.mode &= 0o755            # no setuid/setgid/sticky bits (the data filter does this too)
        else:
            raise DownloadError(f"refusing to extract {name!r}: not a regular file, directory or link")
    for where, full in links.items():       # later links can change where an earlier one leads
        if _resolve(full, links) is None:
            raise outside_link(owner[where])
    return members


def extract(archive: Path, root: Path, folder: str) -> Path:
    """Check all members, unpack into a temporary directory in root, then move `folder` into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{folder}.", dir=root))
    try:
        try:
            with tarfile.open(archive) as tar:
                members = check_members(tar, staging, root)    # everything is checked before writing
                if hasattr(tarfile, "data_filter"):            # defence in depth where Python has it
                    tar.extractall(staging, members=members, filter="data")
                else:
                    tar.extractall(staging, members=members)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DownloadError(f"{archive} could not be extracted ({exc}); delete it and run the command "
                                f"again") from None
        if not (staging / folder).is_dir():
            raise DownloadError(f"{archive} does not contain the folder {folder}/; delete it and run the "
                                f"command again")
        (staging / folder).rename(root / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root / folder


def download(name: str, root: Path, base_url: str | None = None) -> Path:
    """Fetch, verify and extract one dataset into root; a no-op when root/<folder> already exists."""
    base, filename, md5, folder = SOURCES[name]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create {root}: {exc}") from None
    if (root / folder).is_dir():
        print(f"{name}: {root / folder} already exists; skipping")
        return root / folder
    archive = root / filename
    if not archive.exists():
        fetch((base_url or base).rstrip("/") + "/" + filename, archive)
    digest = md5sum(archive)
    if digest != md5:
        bad = archive.with_name(archive.name + ".bad")
        archive.replace(bad)
        raise DownloadError(f"{filename}: md5 {digest} does not match the official {md5}; the file was moved to "
                            f"{bad} and nothing was extracted - run the command again to download it afresh")
    extract(archive, root, folder)
    print(f"{name}: extracted to {root / folder}")
    return root / folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Download CIFAR-10/100 and STL-10 (md5-verified, resumable).")
    p.add_argument("dataset", choices=[*SOURCES, "all"])
    p.add_argument("--root", default="./data", help="directory that receives the archives and dataset folders")
    p.add_argument("--base-url", help="mirror serving the same file names (default: the official sites)")
    args = p.parse_args(argv)
    names = list(SOURCES) if args.dataset == "all" else [args.dataset]
    try:
        for name in names:
            download(name, Path(args.root), args.base_url)
    except DownloadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
