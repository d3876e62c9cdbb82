"""Dynamic int8 for an exported encoder, with SmoothQuant-style activation smoothing first.

ONNX Runtime's dynamic int8 quantises each activation tensor with one scale, and a few channels of a
transformer's activations are far larger than the rest (in e5-small, up to 75x the median channel at an FFN
input), so the rest lose most of their bits. Smoothing
(Xiao et al., 2023, "SmoothQuant") divides each input channel of a weight MatMul (and of a fused Attention's
QKV projection) by ``s = max|X|^alpha / max|W|^(1-alpha)`` and multiplies the weight's row by the same
``s``: the product is unchanged in fp32, and the activation's range is flattened before int8. Post-norm BERT
layers reuse the LayerNorm output as the residual, so ``1/s`` cannot be folded into the LayerNorm; it is an
explicit ``Mul`` in front of each quantised node. ``max|X|`` comes from :data:`CALIBRATION` (project text,
not an evaluation set).
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

# chosen on the project's sample corpus and questions (data/), not on an evaluation set; see docs/performance.md
ALPHA = 0.7
CALIBRATION = (
    "훈민정음은 조선의 세종대왕이 1443년에 만들고 1446년에 반포한 문자이다.",
    "서울의 경복궁은 조선 왕조의 법궁으로, 1395년에 처음 지어졌다.",
    "잠이 오지 않을 때는 침실을 어둡고 서늘하게 유지하고 잠들기 전 화면을 보지 않는 것이 좋다.",
    "김치는 배추와 무에 고춧가루, 마늘, 젓갈을 넣어 발효시킨 한국의 전통 음식이다.",
    "한국은행은 물가 안정을 위해 기준금리를 결정하며, 금융통화위원회가 연 8회 회의를 연다.",
    "태양계에서 가장 큰 행성은 목성이며, 지구 질량의 약 318배에 이른다.",
    "대한민국 헌법 제1조는 대한민국은 민주공화국이며 모든 권력은 국민으로부터 나온다고 규정한다.",
    "광합성은 식물이 빛 에너지를 이용해 이산화탄소와 물로 포도당과 산소를 만드는 과정이다.",
    "2002년 한일 월드컵에서 대한민국 축구 대표팀은 4강에 올랐다.",
    "반도체 공정에서 노광은 웨이퍼 위에 회로 패턴을 빛으로 새기는 단계이다.",
    "누가 처음으로 금속활자를 사용했나요?",
    "부산에서 가장 유명한 해수욕장은 어디인가요?",
    "전기차 배터리는 몇 년 정도 쓸 수 있나요?",
    "The Treaty of Versailles was signed in 1919 and formally ended the First World War.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "How long does it take to boil an egg?",
    "Seoul hosted the Summer Olympic Games in 1988, the second Asian city to do so.",
    "Python 3.12 added a per-interpreter GIL and faster comprehensions.",
    "의료법 제17조에 따르면 의사는 직접 진찰한 환자가 아니면 처방전을 발급할 수 없다.",
    "삼성전자는 1969년에 설립되었으며 메모리 반도체 시장에서 오랫동안 1위를 지켰다. " * 3,
    "조선 시대의 궁궐로는 경복궁, 창덕궁, 창경궁, 덕수궁, 경희궁이 있으며, 이 가운데 창덕궁은 1997년 유네스코 "
    "세계유산으로 등재되었다. 창덕궁의 후원은 자연 지형을 살린 정원으로 알려져 있다. " * 4,
)
Feeds = Callable[[str], Mapping[str, np.ndarray]]


def _activation_maxima(model: Any, targets: list[Any], feeds: Feeds, texts: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Per-channel ``max|X|`` of each target node's first input over ``texts``."""
    import tempfile

    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = list(dict.fromkeys(n.input[0] for n in targets))
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in wanted)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save_model(probe, str(path), save_as_external_data=True, location="probe.onnx.data")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        maxima: dict[str, np.ndarray] = {}
        for text in texts:
            for name, value in zip(wanted, session.run(wanted, dict(feeds(text)))):
                m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                maxima[name] = np.maximum(maxima[name], m) if name in maxima else m
    return maxima


def smooth(src: Path, dst: Path, feeds: Feeds, alpha: float = ALPHA, texts: tuple[str, ...] = CALIBRATION) -> int:
    """Write ``src`` with its weight MatMuls and Attention nodes smoothed to ``dst``; returns the node count."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    weights = {init.name: init for init in model.graph.initializer}
    uses = Counter(name for n in model.graph.node for name in n.input)
    # a weight that another node also reads cannot be rescaled for this node alone
    picked = {i for i, n in enumerate(model.graph.node) if n.op_type in ("MatMul", "Attention") and len(n.input) > 1
              and n.input[1] in weights and uses[n.input[1]] == 1}  # by position: node names may be empty
    maxima = _activation_maxima(model, [model.graph.node[i] for i in sorted(picked)], feeds, texts)
    nodes = []
    for i, node in enumerate(model.graph.node):
        if i in picked:
            w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float32)  # [in, out]
            x_max = maxima[node.input[0]]
            s = x_max ** alpha / np.clip(np.abs(w).max(axis=1) ** (1 - alpha), 1e-5, None)
            # a channel that calibration never saw move keeps its scale: 1/s must not blow up unseen values
            s = np.where(x_max > 0, np.clip(s, 1e-5, None), 1.0).astype(np.float32)
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * s[:, None], node.input[1]))
            inv, smoothed = f"{node.name}_smooth_inv", f"{node.name}_smoothed"
            model.graph.initializer.append(numpy_helper.from_array(1.0 / s, inv))
            nodes.append(helper.make_node("Mul", [node.input[0], inv], [smoothed], name=f"{node.name}_smooth"))
            node.input[0] = smoothed
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save_model(model, str(dst), save_as_external_data=True, location=dst.name + ".data")
    return len(picked)


@contextlib.contextmanager
def _quiet_quantizer() -> Any:
    """Drop ONNX Runtime's quantizer chatter: it logs on the root logger, an INFO line per tensor (72 for e5-small)
    and advice to pre-process. Its errors still pass."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def quantize_int8(src: Path, dst: Path, feeds: Feeds, prompts: tuple[str, ...] = ()) -> int:
    """Smoothed dynamic int8 (per-channel weights) of ``src`` at ``dst``; returns the smoothed node count.

    Calibration runs each text bare and behind each of ``prompts``: e5's ``passage: `` token moves the
    activation maxima (bare sentences alone left 1.15x the score error on the sample set).
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    smoothed = dst.with_name("smoothed.onnx")
    count = smooth(src, smoothed, feeds, texts=tuple(p + t for p in ("", *prompts) for t in CALIBRATION))
    # per-channel weight scales (per-tensor lost more); the default tensor type lets shape inference pass
    # the fused (contrib) operators
    with _quiet_quantizer():
        quantize_dynamic(str(smoothed), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    for leftover in (smoothed, smoothed.with_name(smoothed.name + ".data")):
        leftover.unlink(missing_ok=True)
    return count
