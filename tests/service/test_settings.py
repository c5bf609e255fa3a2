"""Settings from VITSERVE_* variables and overrides, validated with the variable named in the error."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from vitserve.model_store import ModelStore
from vitserve.service.settings import SettingsError, load_settings


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("VITSERVE_PORT", "VITSERVE_STORE_ROOT", "VITSERVE_URL_ALLOW_HOSTS", "VITSERVE_DEVICE_TARGET"):
        monkeypatch.delenv(key, raising=False)
    assert load_settings().port == 8000 and load_settings().default_model == "digits-vit"
    monkeypatch.setenv("VITSERVE_PORT", "9001")
    monkeypatch.setenv("VITSERVE_STORE_ROOT", "/srv/models")
    monkeypatch.setenv("VITSERVE_URL_ALLOW_HOSTS", "images.example.com, CDN.example.com,[2001:db8::1]")
    monkeypatch.setenv("VITSERVE_DEVICE_TARGET", "ascend")
    monkeypatch.setenv("VITSERVE_URL_ALLOW_LOOPBACK", "false")
    s = load_settings()
    assert s.port == 9001 and s.store_root == Path("/srv/models") and s.device_target == "Ascend"
    assert s.url_allow_hosts == ("images.example.com", "cdn.example.com", "2001:db8::1")
    assert s.url_allow_loopback is False
    assert load_settings(port=7000, host=None).port == 7000  # CLI flags win; None means "not given"


def test_batch_buckets() -> None:
    assert load_settings(max_batch_size=8).batch_sizes == (1, 2, 4, 8)
    assert load_settings(max_batch_size=12).batch_sizes == (1, 2, 4, 8, 12)
    assert load_settings(max_batch_size=1).batch_sizes == (1,)


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("VITSERVE_PORT", "http", "VITSERVE_PORT='http'"),
        ("VITSERVE_PORT", "70000", "VITSERVE_PORT"),
        ("VITSERVE_MAX_BATCH_SIZE", "0", "VITSERVE_MAX_BATCH_SIZE"),
        ("VITSERVE_DEVICE_TARGET", "TPU", "VITSERVE_DEVICE_TARGET"),
        ("VITSERVE_ENGINE", "tensorrt", "VITSERVE_ENGINE"),
        ("VITSERVE_URL_ALLOW_LOOPBACK", "maybe", "VITSERVE_URL_ALLOW_LOOPBACK"),
        ("VITSERVE_ADMIN_TOKEN", "short", "at least 16"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_the_admin_token_is_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSERVE_ADMIN_TOKEN", "tiny-secret")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "tiny-secret" not in str(info.value) and "<hidden>" in str(info.value)


def test_empty_admin_token_disables_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VITSERVE_ADMIN_TOKEN", "")
    assert load_settings().admin_token is None


def test_requests_bigger_than_admission_are_a_start_up_error() -> None:
    with pytest.raises(SettingsError, match="max_images"):
        load_settings(queue_size=4, max_batch_size=2, max_images=8)


def test_cpu_engine_threads_and_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("VITSERVE_ENGINE_THREADS", "VITSERVE_ENGINE_PRECISION"):
        monkeypatch.delenv(key, raising=False)
    s = load_settings()
    assert s.engine_threads is None and s.engine_precision == "auto"
    monkeypatch.setenv("VITSERVE_ENGINE_THREADS", "3")
    monkeypatch.setenv("VITSERVE_ENGINE_PRECISION", "INT8")
    s = load_settings()
    assert s.engine_threads == 3 and s.engine_precision == "int8"
    assert load_settings(engine_precision="bf16").engine_precision == "bf16"  # the CLI flag wins


@pytest.mark.parametrize(
    ("env", "value"),
    [("VITSERVE_ENGINE_THREADS", "0"), ("VITSERVE_ENGINE_THREADS", "two"), ("VITSERVE_ENGINE_PRECISION", "fp16")],
)
def test_bad_cpu_engine_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=f"{env}='{value}'"):
        load_settings()


def test_the_compile_cache_key_names_what_the_graphs_depend_on(make_settings: Any, store: ModelStore) -> None:
    from vitserve.service.app import compile_cache_key

    card = store.resolve("tiny")
    keys = {
        engine: compile_cache_key(make_settings(engine=engine), card, "2.10.0") for engine in ("mindspore", "openvino")
    }
    assert keys["mindspore"] != keys["openvino"]  # each compiles other graphs, in another order
    assert all(card.sha256[:16] in key and key.endswith("-ms2.10.0") for key in keys.values())
    assert compile_cache_key(make_settings(engine="mindspore", max_batch_size=4), card, "2.10.0") != keys["mindspore"]


@pytest.mark.parametrize(("entry", "cached"), [("-c", False), ("vitserve.admin.main", False), (__file__, True)])
def test_the_compile_cache_needs_an_entry_script_mindspore_can_read(
    make_settings: Any, store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str, cached: bool
) -> None:
    """MindSpore's cache hashes the imports of ``sys.argv[0]``; a server started with ``python -c`` or under
    ``python -m cProfile -m vitserve.admin.main`` failed its first export on the missing file. It now serves
    without the cache instead."""
    from vitserve.service.app import configure_mindspore

    for name in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):
        monkeypatch.setenv(name, "")  # restored (to unset) after the test: the cache path is read once per process
    monkeypatch.setattr(sys, "argv", [entry])
    configure_mindspore(make_settings(compile_cache_dir=tmp_path / "cache"), store.resolve("tiny"))
    assert (os.environ["MS_COMPILER_CACHE_ENABLE"] == "1") is cached
    assert Path(os.environ["MS_COMPILER_CACHE_PATH"] or "/nonexistent").is_dir() is cached
