"""In-context vectors, steering and vector arithmetic on known cases."""

import pytest
import torch

from analysis.models import model_info
from analysis.steering.icv import build_icv, principal_direction
from analysis.steering.steer import SteeringState, attach_steering, generate, steering
from analysis.steering.vector import SteeringVector, VectorError, cosine_matrix
from native_models import native_model


@pytest.fixture(scope="module")
def model():
    return native_model()


def random_vector(model, seed=0, **overrides) -> SteeringVector:
    info = model_info(model)
    directions = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    fields = dict(directions=directions, model_id=info.name, fingerprint=info.fingerprint)
    fields.update(overrides)
    return SteeringVector(**fields)


def test_principal_direction_recovers_shift():
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(64, generator=generator)
    u = u / u.norm()
    scales = 1 + torch.rand(30, generator=generator)  # shifts of varying length along u
    x = torch.randn(30, 64, generator=generator)
    y = x + 3 * scales[:, None] * u + 0.05 * torch.randn(30, 64, generator=generator)
    found = principal_direction(y - x)
    assert torch.dot(found.direction, u).item() > 0.99
    assert found.explained_variance > 0.5


def test_principal_direction_sign_follows_data():
    generator = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(16, generator=generator), dim=0)
    differences = -(2 + torch.rand(10, 1, generator=generator)) * u
    assert torch.dot(principal_direction(differences).direction, u).item() < -0.99


def test_principal_direction_needs_two_pairs():
    with pytest.raises(VectorError, match="at least 2"):
        principal_direction(torch.randn(1, 8))


def test_build_icv_mismatched_and_empty(model):
    from analysis.steering.icv import pair_differences

    with pytest.raises(VectorError, match="empty"):
        build_icv(model, [])
    with pytest.raises(VectorError, match="2 inputs x but 1 outputs"):
        pair_differences(model, ["a", "b"], ["c"])


def test_steering_touches_claimed_positions(model):
    vector = random_vector(model)
    state = SteeringState()
    generate(model, [1, 2, 3, 4, 5], max_new_tokens=3, vector=vector, strength=1.0, start_position=4,
             use_kv_cache=False, state=state)
    assert state.steered_positions == {4, 5, 6}


def test_steering_changes_only_later_positions(model):
    vector = random_vector(model)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    base = model(tokens, prepend_bos=False)
    with steering(model, vector, strength=5.0, start_position=3):
        steered = model(tokens, prepend_bos=False)
    assert torch.equal(steered[0, :3], base[0, :3])
    assert not torch.allclose(steered[0, 3:], base[0, 3:])


def test_norm_is_preserved(model):
    vector = random_vector(model)
    tokens = torch.tensor([[1, 2, 3, 4]])
    _, base = model.run_with_cache(tokens, prepend_bos=False)
    with steering(model, vector, strength=3.0):
        _, cache = model.run_with_cache(tokens, prepend_bos=False)
    name = "blocks.0.hook_resid_post"
    torch.testing.assert_close(cache[name].norm(dim=-1), base[name].norm(dim=-1), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(cache[name], base[name])


def test_same_tokens_with_and_without_kv_cache(model):
    vector = random_vector(model)
    cached = generate(model, [1, 2, 3], 6, vector=vector, strength=2.0, use_kv_cache=True)
    recomputed = generate(model, [1, 2, 3], 6, vector=vector, strength=2.0, use_kv_cache=False)
    assert cached.new_ids == recomputed.new_ids


def test_hooks_removed_after_exception(model):
    vector = random_vector(model)
    tokens = torch.tensor([[1, 2, 3]])
    baseline = model(tokens, prepend_bos=False)
    with pytest.raises(KeyboardInterrupt):
        with steering(model, vector, strength=2.0):
            raise KeyboardInterrupt
    assert [name for name, point in model.hook_dict.items() if point._forward_hooks] == []
    assert torch.equal(model(tokens, prepend_bos=False), baseline)


def test_lasting_hook_survives_cached_run(model):
    vector = random_vector(model)
    tokens = torch.tensor([[1, 2, 3]])
    baseline = model(tokens, prepend_bos=False)
    handle = attach_steering(model, vector, strength=2.0)
    try:
        steered = model(tokens, prepend_bos=False)
        model.run_with_cache(tokens, prepend_bos=False, names_filter=["blocks.0.hook_resid_post"])
        assert torch.equal(model(tokens, prepend_bos=False), steered)
        assert not torch.allclose(steered, baseline)
    finally:
        handle.remove()
    assert torch.equal(model(tokens, prepend_bos=False), baseline)


def test_vector_from_other_model_is_rejected(model):
    vector = random_vector(model, fingerprint="0" * 64)
    with pytest.raises(VectorError, match="build it on this model"):
        generate(model, [1, 2], 1, vector=vector, strength=1.0)


def test_arithmetic_checks_model(model):
    a, b = random_vector(model, 0), random_vector(model, 1, model_id="other")
    with pytest.raises(VectorError, match="model_id"):
        a + b


def test_arithmetic_values(model):
    a, b = random_vector(model, 0), random_vector(model, 1)
    torch.testing.assert_close((a + b).residual(), a.residual() + b.residual())
    torch.testing.assert_close((a - b).residual(), a.residual() - b.residual())
    torch.testing.assert_close((2 * a).residual(), 2 * a.residual())
    orthogonal = a.project_out(b)
    assert abs(float((orthogonal.residual() * b.residual()).sum(-1).abs().max())) < 1e-3
    matrix = cosine_matrix([a, b, a])
    assert matrix[0, 2].item() == pytest.approx(1.0, abs=1e-6)
    assert matrix[0, 1].item() == pytest.approx(a.cosine(b))


def test_safetensors_round_trip_is_exact(model, tmp_path):
    vector = random_vector(model, strength=1.5, scale=2.5, demos_hash="abc", extra={"n_pairs": 3})
    loaded = SteeringVector.load(vector.save(tmp_path / "v.safetensors"))
    assert torch.equal(loaded.directions, vector.directions)
    for field in ("model_id", "fingerprint", "hook_point", "method", "demos_hash", "strength", "scale", "extra"):
        assert getattr(loaded, field) == getattr(vector, field)


def test_load_rejects_foreign_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(VectorError, match="not an interp-workbench steering vector"):
        SteeringVector.load(tmp_path / "other.safetensors")
    with pytest.raises(VectorError, match="does not exist"):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_erasure_removes_the_component(model):
    from analysis.steering.concepts import erasing

    vector = random_vector(model)
    tokens = torch.tensor([[1, 2, 3, 4]])
    with erasing(model, vector):
        _, cache = model.run_with_cache(tokens, prepend_bos=False)
    for layer in range(model.cfg.n_layers):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        unit = vector.directions[layer] / vector.directions[layer].norm()
        assert (resid @ unit).abs().max().item() < 1e-3


def test_inhibition_audit_finds_restoring_vector(model):
    from analysis.steering.concepts import inhibition_audit

    concept = random_vector(model, 0)
    # A candidate equal to the concept's own direction must restore a behaviour defined on it.
    helper = random_vector(model, 0)
    unrelated = random_vector(model, 5)
    tokens = torch.tensor([[1, 2, 3]])
    unit = concept.directions[-1] / concept.directions[-1].norm()

    def behaviour() -> float:
        _, cache = model.run_with_cache(tokens, prepend_bos=False)
        return float(cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0, -1] @ unit) + 100.0

    result = inhibition_audit(model, concept, {"unrelated": unrelated, "same": helper}, behaviour,
                              strengths=(1.0, 2.0))
    assert result.erased == pytest.approx(100.0, abs=1e-3)
    assert "same" in result.weights
    assert result.restored > result.erased
