"""`glocal download` without a network: one line within seconds, not minutes of tfds retries."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from glocal_cli.data import network, prepare
from glocal_cli.data.registry import DATASETS, get_spec
from glocal_cli.errors import UserError


def _no_dns(*args, **kwargs):
    raise socket.gaierror(-2, "Name or service not known")


def test_offline_download_is_one_line_exit_2_within_seconds(tmp_path, monkeypatch, run_cli):
    monkeypatch.setattr(socket, "create_connection", _no_dns)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    t0 = time.perf_counter()
    code, out, err = run_cli(["download", "fmnist", "--out", str(tmp_path / "raw")])
    assert time.perf_counter() - t0 < 15
    assert code == 2 and len(err) == 1, err
    line = err[0]
    assert line.startswith("error: cannot reach the download source of fashion_mnist")
    assert "fashion-mnist.s3-website.eu-central-1.amazonaws.com" in line and "Name or service not known" in line
    assert "--source FOLDER" in line and "train-images-idx3-ubyte.gz" in line and "FOLDER/fashion_mnist/" in line
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_a_resolver_that_hangs_is_cut_at_the_timeout(monkeypatch):
    release = threading.Event()

    def hang(*args, **kwargs):  # the probe's daemon thread ends when the test does, with an OSError as a real one
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(socket, "create_connection", hang)
    t0 = time.perf_counter()
    try:
        reason = network.unreachable(["https://example.org/a", "https://example.org/b"], timeout=0.5)
    finally:
        release.set()
    assert time.perf_counter() - t0 < 3
    assert reason == "example.org: no answer within 0.5 s"


def test_reachable_hosts_pass_and_each_host_is_probed_once(monkeypatch):
    seen = []

    class Conn:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def connect(address, timeout=None):
        seen.append(address)
        return Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    for proxy in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    assert network.unreachable(["https://a.example/x", "https://a.example/y", "http://b.example:8080/z"]) is None
    assert seen == [("a.example", 443), ("b.example", 8080)]


def test_a_proxy_is_what_gets_probed(monkeypatch):
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert network._endpoint("https://storage.googleapis.com/tfds-data/") == ("proxy.example", 3128)


def test_a_dataset_tfds_already_prepared_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_dns)
    spec = get_spec("mnist")
    (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
    (tmp_path / "mnist" / "3.0.1" / "dataset_info.json").write_text("{}")
    prepare.check_tfds_source(spec, tmp_path)  # no error: nothing to download
    with pytest.raises(UserError, match="cannot reach the download source of fashion_mnist"):
        prepare.check_tfds_source(get_spec("fashion_mnist"), tmp_path)


def test_every_dataset_names_its_download_source():
    for spec in DATASETS.values():
        assert spec.download_urls and all(u.startswith(("http://", "https://")) for u in spec.download_urls), spec.name
