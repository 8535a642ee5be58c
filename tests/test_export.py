"""Steering-vector exports, each loaded back by the tool that consumes it."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from analysis.cli import app
from analysis.models import load_model, model_info
from analysis.steering.export import apply_torch_layout, export_vector, import_gguf
from analysis.steering.steer import steering
from analysis.steering.vector import SteeringVector, VectorError
from native_models import write_tiny_llama_folder


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    return write_tiny_llama_folder(tmp_path_factory.mktemp("llama") / "tiny", ["1", "2", "3", "Monday"])


@pytest.fixture(scope="module")
def bridge(llama_folder):
    return load_model(str(llama_folder))


def make_vector(model, hook_point="resid_post") -> SteeringVector:
    info = model_info(model)
    directions = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=torch.Generator().manual_seed(3))
    return SteeringVector(directions=directions, model_id=info.name, fingerprint=info.fingerprint,
                          hook_point=hook_point, scale=0.5)


def test_gguf_control_vector_layout(bridge, tmp_path):
    import gguf

    vector = make_vector(bridge)
    path = export_vector(vector, "gguf", tmp_path / "v.gguf", strength=2.0)
    reader = gguf.GGUFReader(str(path))
    names = sorted(tensor.name for tensor in reader.tensors)
    assert names == [f"direction.{layer}" for layer in range(1, bridge.cfg.n_layers)]
    assert bytes(reader.fields["general.architecture"].parts[-1]).decode() == "controlvector"
    assert int(reader.fields["controlvector.layer_count"].parts[-1][0]) == bridge.cfg.n_layers - 1
    for tensor in reader.tensors:
        layer = int(tensor.name.split(".")[1])
        assert tensor.data.dtype == np.float32
        np.testing.assert_allclose(tensor.data, (2.0 * 0.5 * vector.directions[layer]).numpy(), rtol=1e-6)


def test_gguf_import_round_trip(bridge, tmp_path):
    vector = make_vector(bridge)
    path = export_vector(vector, "gguf", tmp_path / "v.gguf", strength=1.0)
    info = model_info(bridge)
    imported = import_gguf(path, info.name, info.fingerprint, bridge.cfg.n_layers, bridge.cfg.d_model)
    torch.testing.assert_close(imported.directions[1:], vector.residual()[1:])
    assert imported.directions[0].abs().sum() == 0  # llama.cpp never steers block 0


def test_import_rejects_model_gguf(tmp_path):
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "m.gguf"), arch="llama")
    writer.add_tensor("token_embd.weight", np.zeros((2, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(VectorError, match="not 'controlvector'"):
        import_gguf(tmp_path / "m.gguf", "m", "f", 2, 2)


def test_mlp_out_vector_cannot_go_to_llama_cpp(bridge, tmp_path):
    with pytest.raises(VectorError, match="resid_post"):
        export_vector(make_vector(bridge, "mlp_out"), "gguf", tmp_path / "v.gguf")


def test_torch_layout_matches_workbench_steering(bridge, llama_folder, tmp_path):
    from transformers import AutoModelForCausalLM

    vector = make_vector(bridge)
    path = export_vector(vector, "torch", tmp_path / "v.safetensors", strength=1.5)
    tokens = torch.tensor([[1, 5, 6, 7, 8]])

    with torch.no_grad(), steering(bridge, vector, strength=1.5, preserve_norm=False):
        expected = bridge(tokens, prepend_bos=False)

    plain = AutoModelForCausalLM.from_pretrained(llama_folder, dtype=torch.float32)
    handles = apply_torch_layout(plain, path)
    try:
        with torch.no_grad():
            got = plain(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cli_export_cannot_escape_folder(bridge, tmp_path):
    vector_path = make_vector(bridge).save(tmp_path / "v.safetensors")
    result = CliRunner().invoke(app, ["export", "--vector", str(vector_path), "--format", "gguf",
                                      "--out", "../escape.gguf", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "escapes" in result.output
    assert not (tmp_path / "escape.gguf").exists()


def test_cli_vectors_add_and_compare(bridge, tmp_path):
    a = make_vector(bridge).save(tmp_path / "a.safetensors")
    b = (2 * make_vector(bridge)).save(tmp_path / "b.safetensors")
    runner = CliRunner()
    added = runner.invoke(app, ["vectors", "add", str(a), str(b), "--out", str(tmp_path / "c.safetensors")])
    assert added.exit_code == 0, added.output
    compared = runner.invoke(app, ["vectors", "compare", str(a), str(b), str(tmp_path / "c.safetensors")])
    assert compared.exit_code == 0, compared.output
    assert "+1.000" in compared.output
