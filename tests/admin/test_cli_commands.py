"""The store commands in-process (``admin.main.main``): outputs, refusals and one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.admin.upload_server import RecordingServer
from vitserve.admin.errors import EXIT_NOT_FOUND, EXIT_REFUSED
from vitserve.admin.main import build_parser, main
from vitserve.model_store import ModelStore


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code, err, *fragments, exit_code=1):
    assert code == exit_code, (code, err)
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def digits_store(tmp_path, tiny_ckpt, capsys):
    """A store with digits:1 (production, top1 0.93) and digits:2 (top1 0.88), uploaded by the CLI."""
    store_dir = tmp_path / "store"
    upload = ["ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", tiny_ckpt / "config.json"]
    upload += ["--labels", tiny_ckpt / "labels.json", "--name", "digits", "--store", store_dir]
    assert _run(capsys, *upload, "--alias", "production")[0] == 0
    assert _run(capsys, *upload, "--description", "second")[0] == 0
    store = ModelStore(store_dir)
    store.record_metrics("digits:1", "digits-val", {"top1": 0.93})
    store.record_metrics("digits:2", "digits-val", {"top1": 0.88})
    return store


def test_gated_promotion_refused_with_both_numbers_then_forced(digits_store, capsys):
    root = digits_store.root
    code, _, err = _run(capsys, "models", "promote", "digits", "2", "--dataset", "digits-val", "--store", root)
    _assert_one_line_error(code, err, "0.8800", "0.9300", "digits:1", "force", exit_code=EXIT_REFUSED)
    assert digits_store.resolve("digits").version == 1
    code, out, _ = _run(capsys, "models", "promote", "digits", "2", "--dataset", "digits-val", "--force",
                        "--store", root)  # fmt: skip
    assert code == 0 and "digits@production → 2" in out
    code, out, _ = _run(capsys, "models", "rollback", "digits", "--store", root)
    assert code == 0 and "digits@production → 1" in out
    code, _, err = _run(capsys, "models", "rollback", "digits", "--store", root)
    _assert_one_line_error(code, err, "no earlier version")


def test_delete_refuses_aliased_versions_and_gc_reports(digits_store, capsys):
    root = digits_store.root
    code, _, err = _run(capsys, "models", "delete", "digits:1", "--store", root)
    _assert_one_line_error(code, err, "digits:1 is aliased as production", exit_code=EXIT_REFUSED)
    code, _, err = _run(capsys, "models", "delete", "digits", "--store", root)
    _assert_one_line_error(code, err, "explicit version")
    code, out, _ = _run(capsys, "models", "gc", "digits", "--store", root)
    assert code == 0 and out.strip() == "removed: nothing"  # 1 is production, 2 the latest


def test_list_and_show_tables_and_json(digits_store, capsys):
    root = digits_store.root
    code, out, _ = _run(capsys, "models", "list", "--json", "--store", root)
    assert json.loads(out) == [{"name": "digits", "versions": [1, 2], "aliases": {"production": 1}}]
    code, out, _ = _run(capsys, "models", "show", "digits", "--store", root)
    assert "digits  (resolves to 1)" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2"] and rows[0][2] == "production" and "top1=0.9300" in out
    code, out, _ = _run(capsys, "models", "show", "digits@production", "--json", "--store", root)
    assert json.loads(out)["version"] == 1 and json.loads(out)["labels"][9] == "digit-9"
    code, out, _ = _run(capsys, "models", "list", "--store", root.parent / "empty")
    assert code == 0 and "no models in" in out


def test_upload_refuses_weights_that_do_not_fit_and_bad_names(tiny_ckpt, tmp_path, capsys):
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}))
    code, _, err = _run(capsys, "ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", wrong, "--name", "x",
                        "--store", tmp_path)  # fmt: skip
    _assert_one_line_error(code, err, "mis-shaped", "blocks.0.attn.qkv.weight")
    code, _, err = _run(capsys, "ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", tiny_ckpt / "config.json",
                        "--name", "../up", "--store", tmp_path)  # fmt: skip
    _assert_one_line_error(code, err, "invalid model name '../up'")
    code, _, err = _run(capsys, "ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", "vit_nope", "--name", "x")
    _assert_one_line_error(code, err, "neither a file nor a variant", "vit_base_p16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.json"]


def test_remote_upload_sends_the_contract_fields_and_reports_refusals(tiny_ckpt, capsys, monkeypatch):
    upload = ["ckpt", "upload", tiny_ckpt / "model.ckpt", "--config", tiny_ckpt / "config.json", "--name", "up"]
    upload += ["--data", tiny_ckpt / "data.json", "--labels", tiny_ckpt / "labels.json", "--description", "d"]
    monkeypatch.setenv("VITSERVE_ADMIN_TOKEN", "from-env")
    with RecordingServer() as server:
        code, out, _ = _run(capsys, *upload, "--alias", "staging", "--url", server.url + "/")
    assert code == 0 and "uploaded up:7" in out
    request = server.requests[0]
    assert request["path"] == "/admin/models/up/versions"
    assert request["headers"]["Authorization"] == "Bearer from-env"
    fields = {name: parts[0]["content"] for name, parts in request["fields"].items()}
    assert request["fields"]["checkpoint"][0]["filename"] == "model.ckpt"
    assert fields["checkpoint"] == (tiny_ckpt / "model.ckpt").read_bytes()
    assert json.loads(fields["config"]) == json.loads((tiny_ckpt / "config.json").read_text())
    assert json.loads(fields["data"])["crop_pct"] == 0.875
    assert json.loads(fields["labels"])[2] == "digit-2"
    assert fields["description"] == b"d" and fields["alias"] == b"staging"
    with RecordingServer(status=401) as server:
        code, _, err = _run(capsys, *upload, "--url", server.url, "--token", "wrong")
    _assert_one_line_error(code, err, "HTTP 401", "unauthorized")
    monkeypatch.delenv("VITSERVE_ADMIN_TOKEN")
    code, _, err = _run(capsys, *upload, "--url", "http://127.0.0.1:9")
    _assert_one_line_error(code, err, "needs an admin token")


def test_predict_table_and_errors(digits_store, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8)).save(image)  # grey
    code, out, _ = _run(capsys, "predict", image, image, "--model", "digits", "--store", digits_store.root)
    assert code == 0 and out.splitlines()[0] == "model digits:1"
    ranked = [line.split() for line in out.splitlines() if line.startswith("  ")]
    assert len(ranked) == 6 and [r[0] for r in ranked[:3]] == ["1.", "2.", "3."]
    assert all(r[2].startswith("digit-") for r in ranked)
    assert float(ranked[0][1]) >= float(ranked[1][1]) >= float(ranked[2][1])
    (tmp_path / "notes.jpg").write_text("not an image")
    code, _, err = _run(capsys, "predict", tmp_path / "notes.jpg", "--model", "digits", "--store", digits_store.root)
    _assert_one_line_error(code, err, "notes.jpg")
    code, _, err = _run(capsys, "predict", image, "--model", "other", "--store", digits_store.root)
    _assert_one_line_error(code, err, "'other' not found", "models: digits", exit_code=EXIT_NOT_FOUND)
    code, _, err = _run(capsys, "import", tmp_path / "missing.pth", "--name", "m", "--store", digits_store.root)
    _assert_one_line_error(code, err, "no such checkpoint file", exit_code=EXIT_NOT_FOUND)


def test_help_explains_each_command_with_examples(capsys):
    for argv in (["models"], ["models", "promote"], ["models", "set-precision"], ["import"], ["ckpt", "upload"],
                 ["predict"]):  # fmt: skip
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([*argv, "--help"])
        assert exited.value.code == 0
        text = capsys.readouterr().out
        assert "usage: vitserve " + " ".join(argv) in text and "examples:" in text


def test_set_precision_needs_a_measured_int8_accuracy_or_force(digits_store, capsys):
    root = digits_store.root
    code, _, err = _run(capsys, "models", "set-precision", "digits:2", "int8", "--store", root)
    _assert_one_line_error(code, err, "digits:2 has no measured int8", "--only precision --model digits:2", "--force")
    assert digits_store.card("digits", 2).serving == {}
    code, _, err = _run(capsys, "models", "set-precision", "digits", "int8", "--store", root)
    _assert_one_line_error(code, err, "explicit version")
    code, _, err = _run(capsys, "models", "set-precision", "digits:2", "fp16", "--store", root)
    _assert_one_line_error(code, err, "choose one of: fp32, int8, int8-static, bf16")
    for gated in ("int8-static", "bf16"):  # every reduced precision sits behind the same gate
        code, _, err = _run(capsys, "models", "set-precision", "digits:2", gated, "--store", root)
        _assert_one_line_error(code, err, f"digits:2 has no measured {gated}", "--precision " + gated)
    digits_store.record_metrics("digits:2", "digits-val@int8-static", {"top1_agreement": 0.9694})
    code, _, err = _run(capsys, "models", "set-precision", "digits:2", "int8-static", "--store", root)
    _assert_one_line_error(code, err, "keeps under 99%", "digits-val 0.9694", "--force")
    assert digits_store.card("digits", 2).serving == {}
    metrics = {"top1_agreement": 0.9972, "top1_fp32": 0.93, "top1_delta": -0.0028, "max_abs_logit_diff": 0.2}
    digits_store.record_metrics("digits:2", "digits-val@int8", metrics)
    code, out, _ = _run(capsys, "models", "set-precision", "digits:2", "int8", "--store", root)
    assert code == 0 and out.strip() == "digits:2 serves at int8 (measured top1_agreement: digits-val 0.9972)"
    assert digits_store.card("digits", 2).serving == {"precision": "int8"}
    code, out, _ = _run(capsys, "models", "set-precision", "digits:1", "int8", "--force", "--store", root)
    assert code == 0 and "forced" in out and digits_store.card("digits", 1).serving == {"precision": "int8"}
    code, out, _ = _run(capsys, "models", "show", "digits:2", "--store", root)
    assert "precision=int8" in next(line for line in out.splitlines() if line.startswith("serving"))
    code, out, _ = _run(capsys, "models", "set-precision", "digits:1", "fp32", "--store", root)
    assert code == 0 and out.strip() == "digits:1 serves at fp32"
    assert digits_store.card("digits", 1).serving == {"precision": "fp32"}


def test_store_commands_print_json_results(digits_store, capsys):
    root = digits_store.root
    code, out, _ = _run(capsys, "models", "promote", "digits", "2", "--alias", "staging", "--json", "--store", root)
    assert code == 0 and json.loads(out) == {"name": "digits", "alias": "staging", "version": 2}
    code, _, err = _run(capsys, "models", "rollback", "digits", "--alias", "staging", "--json", "--store", root)
    _assert_one_line_error(code, err, "no earlier version")  # errors stay one line on stderr under --json
    code, out, _ = _run(capsys, "models", "gc", "digits", "--json", "--store", root)
    assert code == 0 and isinstance(json.loads(out)["removed"], list)
    code, _, err = _run(capsys, "models", "show", "absent", "--store", root)
    _assert_one_line_error(code, err, "absent", exit_code=EXIT_NOT_FOUND)
