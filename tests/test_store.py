"""Activation store: keys, padding, damage detection, eviction, concurrency."""

import json
import multiprocessing

import pytest
import torch

from analysis.activations import cached_activations, resolve_hooks, run_and_collect
from analysis.store import ActivationStore, StoreError, StoreKey
from native_models import native_model

HOOKS = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.attn.hook_pattern"]
PROMPTS = [[1, 5, 9, 3], [1, 7], [1, 2, 3, 4, 5, 6, 7], [1, 8, 8]]


@pytest.fixture(scope="module")
def model():
    return native_model()


@pytest.fixture
def store(tmp_path):
    return ActivationStore(tmp_path / "store")


def test_same_request_hits_same_entry(model, store):
    first = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    second = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    assert first.path == second.path
    assert len(store.entries()) == 1


@pytest.mark.parametrize("change", ["tokens", "hooks", "positions", "dtype"])
def test_changing_one_field_misses(model, store, change):
    base = dict(token_ids=PROMPTS, hooks=HOOKS, positions="all", dtype="float32")
    changed = dict(base)
    changed.update({"tokens": {"token_ids": PROMPTS[:-1]}, "hooks": {"hooks": HOOKS[:1]},
                    "positions": {"positions": "last"}, "dtype": {"dtype": "float16"}}[change])
    a = cached_activations(model, store=store, show_progress=False, **base)
    b = cached_activations(model, store=store, show_progress=False, **changed)
    assert a.path != b.path


def test_changed_weights_miss(store):
    first_model, second_model = native_model(seed=0), native_model(seed=1)
    a = cached_activations(first_model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    b = cached_activations(second_model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    assert a.path != b.path


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_prompt_alone(model, side):
    hooks = resolve_hooks(model, ["blocks.*.hook_resid_post", "blocks.*.attn.hook_pattern"])
    batch, mask = run_and_collect(model, PROMPTS, hooks, "all", batch_size=4, padding_side=side,
                                  show_progress=False)
    for row, ids in enumerate(PROMPTS):
        alone, _ = run_and_collect(model, [ids], hooks, "all", show_progress=False)
        n = len(ids)
        assert mask[row].sum().item() == n
        for hook in hooks:
            if hook.endswith("hook_pattern"):
                got, want = batch[hook][row, :, :n, :n], alone[hook][0]
            else:
                got, want = batch[hook][row, :n], alone[hook][0]
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_last_means_last_real_token(model, side):
    hooks = ["blocks.1.hook_resid_post"]
    last, _ = run_and_collect(model, PROMPTS, hooks, "last", padding_side=side, show_progress=False)
    for row, ids in enumerate(PROMPTS):
        alone, _ = run_and_collect(model, [ids], hooks, "all", show_progress=False)
        torch.testing.assert_close(last[hooks[0]][row], alone[hooks[0]][0, -1], atol=1e-4, rtol=0)


def test_position_list(model, store):
    entry = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS[:1], positions=[0, -1], store=store,
                               show_progress=False)
    assert tuple(entry.tensor(HOOKS[0]).shape) == (4, 2, model.cfg.d_model)


def test_position_outside_prompt_is_rejected(model, store):
    with pytest.raises(StoreError, match="shortest prompt"):
        cached_activations(model, token_ids=PROMPTS, hooks=HOOKS[:1], positions=[5], store=store)


def test_unknown_hook_lists_close_matches(model, store):
    with pytest.raises(StoreError, match="Close matches: blocks.0.hook_resid_post"):
        cached_activations(model, token_ids=PROMPTS, hooks=["blocks.0.hook_resid_psot"], store=store)


def test_empty_prompt_list(model, store):
    with pytest.raises(StoreError, match="empty"):
        cached_activations(model, token_ids=[], hooks=HOOKS, store=store)


def test_prompt_longer_than_context(model, store):
    too_long = [[1] * (model.cfg.n_ctx + 1)]
    with pytest.raises(StoreError, match="context window"):
        cached_activations(model, token_ids=too_long, hooks=HOOKS, store=store)


def test_unwritable_store(model, tmp_path):
    # A store folder below a regular file cannot be created, even by root.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StoreError, match="not writable"):
        cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=ActivationStore(blocker / "store"))


def test_read_is_lazy(model, store):
    entry = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    # Delete one shard: the others still read, so opening did not touch it.
    (entry.path / entry.manifest["tensors"][HOOKS[2]]["file"]).unlink()
    assert entry.tensor(HOOKS[0]).shape[0] == len(PROMPTS)


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_damaged_entry_is_rebuilt(model, store, damage, caplog):
    entry = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    expected = entry.tensor(HOOKS[1]).clone()
    shard = entry.path / entry.manifest["tensors"][HOOKS[1]]["file"]
    data = bytearray(shard.read_bytes())
    if damage == "truncate":
        shard.write_bytes(bytes(data[:-10]))
    elif damage == "flip":
        data[-1] ^= 0xFF
        shard.write_bytes(bytes(data))
    else:
        (entry.path / "manifest.json").write_text("{")

    assert store.verify(entry) != []
    rebuilt = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    assert str(entry.path) in caplog.text
    assert torch.equal(rebuilt.tensor(HOOKS[1]), expected)
    assert store.verify(rebuilt) == []


def test_lru_eviction_keeps_recent(model, tmp_path):
    store = ActivationStore(tmp_path / "store")
    first = cached_activations(model, token_ids=PROMPTS[:1], hooks=HOOKS, store=store, show_progress=False)
    second = cached_activations(model, token_ids=PROMPTS[1:2], hooks=HOOKS, store=store, show_progress=False)
    cached_activations(model, token_ids=PROMPTS[:1], hooks=HOOKS, store=store, show_progress=False)  # use first
    removed = store.gc(max_bytes=first.nbytes + 1)
    assert [entry.id for entry in removed] == [second.id]
    assert first.path.exists()


def test_interrupted_write_leaves_no_entry(model, store, monkeypatch):
    from analysis import store as store_module

    def fail(path, tensor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "_save_tensor", fail)
    with pytest.raises(OSError, match="No space"):
        cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    assert store.entries() == []
    assert list(store.root.iterdir()) == []


def _write_entry(root: str, barrier) -> str:
    model = native_model()
    barrier.wait()
    entry = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=ActivationStore(root),
                               show_progress=False)
    return entry.id


def test_concurrent_writers_share_one_entry(tmp_path):
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        barrier = manager.Barrier(2)
        with context.Pool(2) as pool:
            ids = pool.starmap(_write_entry, [(root, barrier), (root, barrier)])
    assert ids[0] == ids[1]
    store = ActivationStore(root)
    assert len(store.entries()) == 1
    assert store.verify(store.entries()[0]) == []


def test_manifest_records_tokens_and_versions(model, store):
    entry = cached_activations(model, token_ids=PROMPTS, hooks=HOOKS, store=store, show_progress=False)
    manifest = json.loads((entry.path / "manifest.json").read_text())
    assert manifest["token_ids"] == PROMPTS
    assert "torch" in manifest["versions"]
    assert set(manifest["hashes"]) == set(manifest["files"])


def test_key_digest_is_stable():
    key = StoreKey("m", "f", ((1, 2),), ("h",), "all")
    assert key.digest() == StoreKey("m", "f", ((1, 2),), ("h",), "all").digest()
