"""int8 export: smoothing is exact in fp32, and it cuts the int8 error that an outlier activation channel causes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from pipeline.models.onnx_embedding import _calibration_feeds, _probe, export_onnx
from pipeline.models.onnx_quantize import smooth

NAMES = ["input_ids", "attention_mask"]


def _run(path: Path) -> np.ndarray:
    feed = _probe(NAMES)
    hidden = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    return hidden[feed["attention_mask"].astype(bool)]  # real tokens only


def test_smoothing_keeps_fp32_outputs(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    fp32 = export_onnx(tiny_model_dir)
    out = tmp_path / "smoothed.onnx"
    count = smooth(fp32, out, _calibration_feeds(tiny_model_dir, NAMES))
    muls = [n for n in onnx.load(str(out), load_external_data=False).graph.node if n.name.endswith("_smooth")]
    assert count == len(muls) == 8  # per layer: the fused Attention and three weight MatMuls
    assert np.allclose(_run(out), _run(fp32), atol=1e-4)


def test_smoothed_int8_beats_plain_int8_on_an_outlier_channel(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    import torch
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertModel

    model_dir = tmp_path / "outlier"
    shutil.copytree(tiny_model_dir, model_dir)
    bert = BertModel.from_pretrained(str(model_dir))
    layer = bert.encoder.layer[0]
    with torch.no_grad():  # one FFN channel 100x the rest, as trained transformers have; the next weight undoes the scale
        layer.intermediate.dense.weight[5] *= 100
        layer.intermediate.dense.bias[5] = 100.0
        layer.output.dense.weight[:, 5] /= 100
    bert.save_pretrained(str(model_dir))
    monkeypatch.setenv("RAGPIPE_MODEL_DIR", str(tmp_path / "models"))
    fp32 = export_onnx(model_dir)
    plain = tmp_path / "plain-int8.onnx"
    quantize_dynamic(str(fp32), str(plain), weight_type=QuantType.QInt8, per_channel=True, extra_options={"DefaultTensorType": TensorProto.FLOAT})
    want = _run(fp32)
    err_plain = np.abs(_run(plain) - want).mean()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        err_smoothed = np.abs(_run(export_onnx(model_dir, quantize="int8")) - want).mean()
    assert err_smoothed < 0.5 * err_plain
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]  # the quantizer's per-tensor lines are dropped
