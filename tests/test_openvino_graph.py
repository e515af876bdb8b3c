"""The OpenVINO backbone graph computes PyTorch's vectors, follows the weights, and never trains.

The same three architectures as the packing tests: Llama (grouped-query attention), Qwen3 (q/k
norms) and Gemma3 with a 3-token sliding window shorter than the texts, so the graph must keep
the window and the padding mask for shapes it was not traced on.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from peft import LoraConfig
from test_packing import PAIRS, TEXTS

from llm_embed.encoder import Encoder
from llm_embed.errors import OptionError, UserError
from llm_embed.inference import openvino_graph
from llm_embed.module import EmbeddingModule

LONG = [
    "the quick brown fox jumps over the lazy dog while the farmer watches from the gate",
    "rates",
    *TEXTS,
]


@pytest.fixture
def conversions(monkeypatch) -> list[str]:
    """Every conversion's fingerprint, in order."""
    seen: list[str] = []
    real = openvino_graph.convert

    def counting(encoder, fingerprint):
        seen.append(fingerprint)
        return real(encoder, fingerprint)

    monkeypatch.setattr(openvino_graph, "convert", counting)
    return seen


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("pooling", ["weighted_mean", "last", "prompt_masked_mean", "eos"])
def test_graph_vectors_equal_pytorch(model_dir, pooling, padding_side, conversions):
    torch_enc = Encoder(model_dir, pooling=pooling, padding_side=padding_side)
    ov_enc = Encoder(
        model_dir, pooling=pooling, padding_side=padding_side, inference_backend="openvino"
    )
    assert ov_enc.config_dict["inference_backend"] == "openvino"
    # batch sizes 1 (no padding), 3 and all: shapes the graph was not traced on
    for batch_size in (1, 3, len(LONG)):
        want = torch_enc.encode(LONG, batch_size=batch_size)
        got = ov_enc.encode(LONG, batch_size=batch_size)
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert len(conversions) == 1  # one graph for the weights, reused by every call


def test_graph_keeps_a_hidden_layer_and_a_longer_cut(model_dir):
    kwargs = {"pooling": "mean", "layer": 1, "max_text_tokens": 40, "prompt": "none"}
    want = Encoder(model_dir, **kwargs).encode(LONG)
    got = Encoder(model_dir, **kwargs, inference_backend="openvino").encode(LONG)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_graph_follows_the_weights(tiny_model_dir, conversions):
    enc = Encoder(tiny_model_dir, pooling="mean", inference_backend="openvino")
    first = enc.encode(TEXTS)
    with torch.no_grad():
        enc.backbone.get_input_embeddings().weight.mul_(1.5)
    second = enc.encode(TEXTS)
    assert len(conversions) == 2
    assert not torch.allclose(first, second, atol=1e-3)
    enc.inference_backend = "torch"
    torch.testing.assert_close(second, enc.encode(TEXTS), atol=2e-5, rtol=1e-4)


def test_training_passes_stay_in_pytorch(tiny_model_dir, conversions):
    """Train mode and passes with gradients never touch the graph: training is exact PyTorch."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    enc = Encoder(tiny_model_dir, pooling="mean", inference_backend="openvino")
    module = EmbeddingModule(enc, lora=lora)
    module.train()
    loss = module._loss(PAIRS)
    loss.backward()
    assert any(p.grad is not None for p in module.parameters() if p.requires_grad)
    module.eval()
    with torch.enable_grad():  # eval mode, but gradients: still PyTorch
        module._loss(PAIRS)
    with torch.no_grad():
        module.validation_step(PAIRS, 0)
    assert conversions == []
    # an inference pass on the merged adapter builds the graph, and its vectors are PyTorch's
    with enc.merged_adapter():
        got = enc.encode(TEXTS)
        with enc.torch_backend():
            want = enc.encode(TEXTS)
    assert len(conversions) == 1
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_bad_backend_is_one_line(tiny_model_dir):
    with pytest.raises(
        OptionError, match="inference_backend='onnx' is unknown; use 'torch' or 'openvino'"
    ):
        Encoder(tiny_model_dir, inference_backend="onnx")


def test_missing_openvino_is_one_line(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(UserError, match="needs the openvino package: pip install openvino"):
        Encoder(tiny_model_dir, inference_backend="openvino")


def test_graph_refuses_a_gpu_model(tiny_model_dir, monkeypatch):
    enc = Encoder(tiny_model_dir, inference_backend="openvino")
    monkeypatch.setattr(Encoder, "device", property(lambda self: torch.device("cuda", 0)))
    with pytest.raises(OptionError, match="runs on the CPU, but the model is on cuda:0"):
        openvino_graph.convert(enc, "x")


def test_bf16_needs_bf16_units(tiny_model_dir, monkeypatch):
    import openvino as ov

    real = ov.Core.get_property

    def no_bf16(self, device, name):
        value = real(self, device, name)
        return [c for c in value if c != "BF16"] if name == "OPTIMIZATION_CAPABILITIES" else value

    monkeypatch.setattr(ov.Core, "get_property", no_bf16)
    enc = Encoder(tiny_model_dir, inference_backend="openvino", inference_dtype="bfloat16")
    with pytest.raises(OptionError, match="needs a CPU with bf16 units"):
        enc.encode(TEXTS)


def test_saved_graph_is_reused_only_for_its_weights(tiny_model_dir, tmp_path, conversions, caplog):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    enc = Encoder(str(folder), pooling="mean", inference_backend="openvino")
    path = openvino_graph.save_graph(enc, folder)
    assert path == folder / "openvino" / "openvino_model.xml"
    assert len(conversions) == 1
    again = Encoder(str(folder), pooling="mean", inference_backend="openvino")
    want = Encoder(str(folder), pooling="mean").encode(TEXTS)
    torch.testing.assert_close(again.encode(TEXTS), want, atol=2e-5, rtol=1e-4)
    assert len(conversions) == 1  # read from the folder, not converted
    other = Encoder(str(folder), pooling="mean", layer=1, inference_backend="openvino")
    with caplog.at_level(logging.INFO, logger=openvino_graph.__name__):
        other.encode(TEXTS)
    assert len(conversions) == 2
    assert "was built from other weights: converting it again" in caplog.text


@pytest.mark.parametrize(
    "damage", ["flip bytes of the .bin", "truncate the .bin", "delete the .xml", "no checksums"]
)
def test_a_damaged_graph_is_rebuilt_never_run(
    tiny_model_dir, tmp_path, conversions, caplog, damage
):
    """A graph whose files differ from the checksums written at export gives the weights' own
    vectors (converted again, with a notice), never the graph's different ones."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    openvino_graph.save_graph(
        Encoder(str(folder), pooling="mean", inference_backend="openvino"), folder
    )
    graph = folder / "openvino"
    weights = graph / "openvino_model.bin"
    if damage == "flip bytes of the .bin":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)  # zeros: a silently different model
        weights.write_bytes(bytes(data))
    elif damage == "truncate the .bin":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "delete the .xml":
        (graph / "openvino_model.xml").unlink()
    else:
        (graph / "checksums.json").unlink()
    want = Encoder(str(folder), pooling="mean").encode(TEXTS)
    with caplog.at_level(logging.WARNING, logger=openvino_graph.__name__):
        got = Encoder(str(folder), pooling="mean", inference_backend="openvino").encode(TEXTS)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert len(conversions) == 2  # the saved one refused, a new one converted from the weights
    assert "converting it again from the weights" in caplog.text


def test_an_intact_graph_passes_its_checksums(tiny_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    openvino_graph.save_graph(
        Encoder(str(folder), pooling="mean", inference_backend="openvino"), folder
    )
    assert openvino_graph.graph_problem(folder / "openvino") is None
    weights = folder / "openvino" / "openvino_model.bin"
    weights.write_bytes(weights.read_bytes() + b"\0")
    assert "does not match" in openvino_graph.graph_problem(folder / "openvino")


def test_the_converter_sends_no_telemetry(tiny_model_dir, monkeypatch):
    """OpenVINO's converter would fork a process to send usage telemetry, which can hang a run."""
    pytest.importorskip("openvino")
    import multiprocessing

    from openvino.tools.ovc import convert_impl

    from llm_embed.encoder import Encoder
    from llm_embed.inference import openvino_graph

    started = []
    monkeypatch.setattr(multiprocessing.Process, "start", lambda self: started.append(self))
    from openvino.tools.ovc import telemetry_utils, utils

    for module in (convert_impl, telemetry_utils, utils):  # restored after the test
        monkeypatch.setattr(module, "tm", module.tm)
    monkeypatch.setattr(convert_impl, "init_ovc_telemetry", convert_impl.init_ovc_telemetry)
    openvino_graph.convert(Encoder(tiny_model_dir, pooling="mean"), "fingerprint")
    assert started == []
    assert type(convert_impl.init_ovc_telemetry()).__module__.endswith("telemetry_stub")
