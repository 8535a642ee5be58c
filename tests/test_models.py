"""Model loading: sources, bad input, cache validity, no network."""

import json
import socket
import time

import pytest

from analysis import models
from analysis.models import DEFAULT_MODEL, ModelLoadError, load_model
from native_models import write_tiny_llama_folder

WORDS = ["1", "2", "3", "Monday"]


@pytest.fixture
def no_network(monkeypatch):
    """Make any connection to a non-loopback address fail and record it."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
            attempts.append(address)
            raise OSError(f"network disabled in this test: {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(f"name resolution disabled in this test: {host}")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    monkeypatch.setattr(socket, "create_connection",
                        lambda address, *a, **k: guarded_connect(socket.socket(), address))
    return attempts


def test_unknown_name_lists_aliases_quickly(no_network, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as error:
        load_model("no-such-model-anywhere", hub_timeout_s=2)
    assert time.perf_counter() - started < 15
    message = str(error.value)
    assert DEFAULT_MODEL in message
    assert "cannot be reached" in message
    assert "--model DIR" in message


def test_offline_hub_id_explains_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="local"):
        load_model("someone/some-model")


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not a model")
    with pytest.raises(ModelLoadError, match="neither a .gguf file"):
        load_model(str(path))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def test_config_without_architectures_loads(tmp_path):
    folder = write_tiny_llama_folder(tmp_path / "llama", WORDS, drop_architectures=True)
    model = load_model(str(folder))
    assert model.cfg.n_heads == 4
    assert model.workbench_info.source == "hf-folder"


def test_folder_fingerprint_changes_with_weights(tmp_path):
    folder = write_tiny_llama_folder(tmp_path / "llama", WORDS)
    before = models._folder_fingerprint(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert models._folder_fingerprint(folder) != before


def _fake_cache(folder, fingerprint="abc"):
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    manifest = {"format_version": models.CACHE_FORMAT_VERSION, "fingerprint": fingerprint,
                "files": {"model.safetensors": 100}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_cache_valid_when_complete(tmp_path):
    assert models._float_cache_is_valid(_fake_cache(tmp_path / "m"), "abc")


def test_cache_without_manifest_is_rebuilt(tmp_path):
    folder = _fake_cache(tmp_path / "m")
    (folder / "manifest.json").unlink()
    assert not models._float_cache_is_valid(folder, "abc")


def test_truncated_cache_is_rebuilt(tmp_path):
    folder = _fake_cache(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"x" * 50)
    assert not models._float_cache_is_valid(folder, "abc")


def test_cache_of_other_weights_is_refused(tmp_path):
    assert not models._float_cache_is_valid(_fake_cache(tmp_path / "m"), "different")


@pytest.mark.integration
def test_default_model_loads_offline(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(DEFAULT_MODEL)
    assert no_network == []
    assert model.cfg.n_layers == 18
    assert model.cfg.n_heads == 4
    assert model.workbench_info.source == "embedded-gguf"
