"""scripts/download_data.py against a local HTTP server: good archive, bad checksum, path traversal, links,
resume (including a server that resumes at the wrong byte), staging, exit codes."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.util
import io
import tarfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("download_data", ROOT / "scripts/download_data.py")
dd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dd)


def make_archive(path: Path, members: dict[str, bytes]) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(tmp_path):
    serve = tmp_path / "serve"
    serve.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(serve)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield serve, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_good_archive_is_downloaded_verified_and_extracted(server, tmp_path, monkeypatch):
    serve, url = server
    md5 = make_archive(serve / "cifar-10-python.tar.gz", {"cifar-10-batches-py/data_batch_1": b"abc"})
    monkeypatch.setitem(dd.SOURCES, "cifar10", (url, "cifar-10-python.tar.gz", md5, "cifar-10-batches-py"))
    root = tmp_path / "data"
    assert dd.main(["cifar10", "--root", str(root)]) == 0
    assert (root / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"abc"
    assert dd.main(["cifar10", "--root", str(root)]) == 0     # second run: skipped


def test_bad_checksum_extracts_nothing(server, tmp_path, monkeypatch, capsys):
    serve, url = server
    make_archive(serve / "stl10_binary.tar.gz", {"stl10_binary/train_X.bin": b"x"})
    monkeypatch.setitem(dd.SOURCES, "stl10", (url, "stl10_binary.tar.gz", "0" * 32, "stl10_binary"))
    root = tmp_path / "data"
    assert dd.main(["stl10", "--root", str(root)]) == 2
    assert "does not match" in capsys.readouterr().err
    assert not (root / "stl10_binary").exists()


@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "cifar-100-python/../../evil.txt"])
def test_path_traversal_member_is_refused(server, tmp_path, monkeypatch, capsys, member):
    serve, url = server
    md5 = make_archive(serve / "cifar-100-python.tar.gz", {"cifar-100-python/train": b"ok", member: b"evil"})
    monkeypatch.setitem(dd.SOURCES, "cifar100", (url, "cifar-100-python.tar.gz", md5, "cifar-100-python"))
    root = tmp_path / "data"
    assert dd.main(["cifar100", "--root", str(root)]) == 2
    assert "refusing to extract" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists() and not (root / "cifar-100-python").exists()


def test_interrupted_download_resumes(server, tmp_path, monkeypatch):
    serve, url = server
    md5 = make_archive(serve / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": b"z" * 5000})
    monkeypatch.setitem(dd.SOURCES, "cifar10", (url, "cifar-10-python.tar.gz", md5, "cifar-10-batches-py"))
    root = tmp_path / "data"
    root.mkdir()
    full = (serve / "cifar-10-python.tar.gz").read_bytes()
    (root / "cifar-10-python.tar.gz.part").write_bytes(full[:40])    # what an interrupted run left
    assert dd.main(["cifar10", "--root", str(root)]) == 0
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == b"z" * 5000


def test_unreachable_server_is_a_one_line_error(tmp_path, capsys):
    assert dd.main(["cifar10", "--root", str(tmp_path), "--base-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "failed" in err[0]


# ---- resume with a standard server (Content-Range), links, staging

class RecordingRangeHandler(RangeHandler):
    """Answers a Range request with 206 + Content-Range (or a wrong start when `skew` is set); records it."""

    ranges: list = []
    skew = 0

    def do_GET(self):
        data = Path(self.translate_path(self.path)).read_bytes()
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        start = int(rng.split("=")[1].split("-")[0]) - self.skew if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def recording_server(tmp_path):
    serve = tmp_path / "serve"
    serve.mkdir()
    RecordingRangeHandler.ranges, RecordingRangeHandler.skew = [], 0
    handler = functools.partial(RecordingRangeHandler, directory=str(serve))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield serve, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("skew", [0, 7])
def test_resume_asks_for_the_missing_bytes_only(recording_server, tmp_path, monkeypatch, skew):
    serve, url = recording_server
    RecordingRangeHandler.skew = skew                       # 7: the server resumes at the wrong byte
    md5 = make_archive(serve / "cifar-10-python.tar.gz", {"cifar-10-batches-py/test_batch": bytes(range(256)) * 40})
    monkeypatch.setitem(dd.SOURCES, "cifar10", (url, "cifar-10-python.tar.gz", md5, "cifar-10-batches-py"))
    root = tmp_path / "data"
    root.mkdir()
    full = (serve / "cifar-10-python.tar.gz").read_bytes()
    (root / "cifar-10-python.tar.gz.part").write_bytes(full[:100])
    assert dd.main(["cifar10", "--root", str(root), "--base-url", url]) == 0
    assert RecordingRangeHandler.ranges[0] == "bytes=100-"
    assert RecordingRangeHandler.ranges[1:] == ([] if not skew else [None])    # wrong start: one fresh download
    assert (root / "cifar-10-python.tar.gz").read_bytes() == full
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == bytes(range(256)) * 40


def make_link_archive(path: Path, link_type, name: str, target: str) -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("stl10_binary/train_X.bin")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
        link = tarfile.TarInfo(name)
        link.type, link.linkname = link_type, target
        tar.addfile(link)
    path.write_bytes(buf.getvalue())
    return hashlib.md5(buf.getvalue()).hexdigest()


@pytest.mark.parametrize("link_type,name,target", [
    (tarfile.SYMTYPE, "stl10_binary/up", "../../outside"),
    (tarfile.SYMTYPE, "stl10_binary/abs", "/etc/passwd"),
    (tarfile.LNKTYPE, "stl10_binary/hard", "../outside"),        # hard links resolve from the archive root
])
def test_links_out_of_the_root_are_refused(server, tmp_path, monkeypatch, capsys, link_type, name, target):
    serve, url = server
    md5 = make_link_archive(serve / "stl10_binary.tar.gz", link_type, name, target)
    monkeypatch.setitem(dd.SOURCES, "stl10", (url, "stl10_binary.tar.gz", md5, "stl10_binary"))
    root = tmp_path / "data"
    assert dd.main(["stl10", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]           # after the progress bar
    assert err.startswith(f"error: refusing to extract link '{name}' -> '{target}': it points outside {root}")
    assert sorted(p.name for p in root.iterdir()) == ["stl10_binary.tar.gz"]      # nothing extracted, no staging


def test_link_inside_the_root_is_fine(server, tmp_path, monkeypatch):
    serve, url = server
    md5 = make_link_archive(serve / "stl10_binary.tar.gz", tarfile.SYMTYPE, "stl10_binary/alias", "train_X.bin")
    monkeypatch.setitem(dd.SOURCES, "stl10", (url, "stl10_binary.tar.gz", md5, "stl10_binary"))
    root = tmp_path / "data"
    assert dd.main(["stl10", "--root", str(root)]) == 0
    assert (root / "stl10_binary" / "alias").read_bytes() == b"x"


def test_archive_without_the_dataset_folder_leaves_nothing(server, tmp_path, monkeypatch, capsys):
    serve, url = server
    md5 = make_archive(serve / "cifar-10-python.tar.gz", {"other/file": b"1"})
    monkeypatch.setitem(dd.SOURCES, "cifar10", (url, "cifar-10-python.tar.gz", md5, "cifar-10-batches-py"))
    root = tmp_path / "data"
    assert dd.main(["cifar10", "--root", str(root)]) == 2
    assert "does not contain the folder cifar-10-batches-py/" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-python.tar.gz"]


def test_script_runs_as_a_program(tmp_path):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(ROOT / "scripts/download_data.py"), "cifar10", "--root",
                           str(tmp_path), "--base-url", "http://127.0.0.1:9"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: downloading") and proc.stdout == ""
