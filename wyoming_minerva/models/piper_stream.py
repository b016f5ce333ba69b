"""A Piper voice's ONNX model cut in two at its decoder, so the audio of a piece is decoded in bounded chunks.

Why: Piper's VITS decoder (HiFi-GAN) holds activations in proportion to the audio it makes (~20 MiB per second
of speech) and gives nothing until it has made all of it. Everything before it (text encoder, durations, flow)
is cheap and works on the whole piece, so prosody is decided for the whole piece as before; the decoder only
sees a few latent frames around each output sample, so decoding the latent in chunks with `PAD_FRAMES` of
context on each side gives the same samples (bit-exact on the bundled voice), holds memory to one chunk, and
lets the first chunk play while the rest is decoded. A model whose graph does not have this shape (or when the
`onnx` package is missing) runs whole, as before.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_LOGGER = logging.getLogger(__name__)

DECODER_SCOPE = "/dec/"  # node names of the decoder in Piper's exports (torch.onnx scopes)
PAD_FRAMES = 12  # latent frames of context on each side of a chunk (the decoder's reach is ~10)
FIRST_CHUNK_FRAMES = 32  # ~0.37 s of audio at 22.05 kHz: sooner first audio
_PROVIDERS = ["CPUExecutionProvider"]
CHUNK_FRAMES = 192  # ~2.2 s: bounds the decoder's memory; larger chunks waste less on padding


@dataclass(frozen=True)
class Cut:
    """Where a model was cut: the back part's inputs, the latent (time on its last axis) first."""

    latent: str
    conditions: tuple[str, ...]  # passed whole to every chunk (a multi-speaker voice's speaker embedding)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.latent, *self.conditions)


def find_cut(graph: Any) -> tuple[Cut, list[int]] | None:
    """The cut of a Piper VITS graph and the indices of the back part's nodes (in order), or None.

    The back part is everything that depends on the decoder's input; it must produce every output and read
    no model input directly (so the front part computes all it needs).
    """
    decoder = [node for node in graph.node if node.name.startswith(DECODER_SCOPE)]
    if not decoder:
        return None
    initializers = {tensor.name for tensor in graph.initializer}
    latent = next((name for name in decoder[0].input if name and name not in initializers), None)
    if latent is None:
        return None
    produced = {latent}
    back: list[int] = []
    for index, node in enumerate(graph.node):  # ONNX graphs list nodes in topological order
        if any(name in produced for name in node.input):
            back.append(index)
            produced.update(node.output)
    inputs: list[str] = []
    for index in back:
        for name in graph.node[index].input:
            if name and name not in produced and name not in initializers and name not in inputs:
                inputs.append(name)
    model_inputs = {value.name for value in graph.input}
    if any(name in model_inputs for name in inputs) or not all(out.name in produced for out in graph.output):
        return None
    return Cut(latent, tuple(inputs)), back


class VitsModel:
    """A Piper voice's model: `audio(feeds)` yields float audio in pieces (one piece when run whole)."""

    def __init__(self, whole: Any = None, front: Any = None, back: Any = None, cut: Cut | None = None) -> None:
        self._whole, self._front, self._back, self._cut = whole, front, back, cut

    @property
    def streams(self) -> bool:
        return self._cut is not None

    @staticmethod
    def load(model_path: Path, options: Any) -> VitsModel:
        """Blocking: cut the model at its decoder when it has one, else one session for the whole model."""
        import onnxruntime

        try:
            parts = _load_cut(model_path, options)
        except Exception as err:  # a graph of another shape: it still runs whole
            _LOGGER.warning("Running %s whole (could not cut it at its decoder: %s)", model_path.name, err)
            parts = None
        if parts is not None:
            return VitsModel(front=parts[0], back=parts[1], cut=parts[2])
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=_PROVIDERS)
        return VitsModel(whole=session)

    def audio(
        self, feeds: dict[str, np.ndarray], first_frames: int = CHUNK_FRAMES, frames: int = CHUNK_FRAMES
    ) -> Iterator[np.ndarray]:
        """Float samples of one sentence, in order: the first `first_frames` latent frames, then `frames` each."""
        if self._cut is None:
            yield np.asarray(self._whole.run(None, feeds)[0], dtype=np.float32).reshape(-1)
            return
        names = self._cut.names
        values = dict(zip(names, self._front.run(list(names), feeds), strict=True))
        latent = values.pop(self._cut.latent)
        total = latent.shape[-1]
        start, size = 0, first_frames
        while start < total:
            end = total if total - (start + size) < PAD_FRAMES else start + size  # no sliver of a last chunk
            low, high = max(0, start - PAD_FRAMES), min(total, end + PAD_FRAMES)
            out = np.asarray(self._back.run(None, {**values, self._cut.latent: latent[..., low:high]})[0])
            samples = out.reshape(-1)
            hop = len(samples) // (high - low)
            yield samples[(start - low) * hop : (end - low) * hop].astype(np.float32, copy=False)
            start, size = end, frames


def _load_cut(model_path: Path, options: Any) -> tuple[Any, Any, Cut] | None:
    """The two sessions of a cut model, with as few copies of the weights alive at once as possible.

    Each part is written to a temporary file and loaded from there: a session made from bytes in memory keeps
    a second copy of the weights for its whole life.
    """
    try:
        import onnx
    except ImportError:
        return None
    import onnxruntime

    model = onnx.load(str(model_path))
    graph = model.graph
    found = find_cut(graph)
    if found is None:
        return None
    cut, back_nodes = found
    back_set = set(back_nodes)
    back_inputs = {name for index in back_nodes for name in graph.node[index].input}
    front_inputs = {name for index, node in enumerate(graph.node) if index not in back_set for name in node.input}
    cut_values = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in cut.names]
    with tempfile.TemporaryDirectory(prefix="minerva-voice-") as folder:
        back_path, front_path = Path(folder) / "back.onnx", Path(folder) / "front.onnx"
        back_graph = onnx.helper.make_graph(
            [graph.node[index] for index in back_nodes],
            "decoder",
            cut_values,
            list(graph.output),
            [tensor for tensor in graph.initializer if tensor.name in back_inputs],
        )
        onnx.save(
            onnx.helper.make_model(back_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version),
            str(back_path),
        )
        del back_graph
        # The front part is the model itself, trimmed in place: its large weights are never copied.
        for index in sorted(back_set, reverse=True):
            del graph.node[index]
        for index in reversed(range(len(graph.initializer))):
            if graph.initializer[index].name not in front_inputs:
                del graph.initializer[index]
        del graph.output[:]
        graph.output.extend(cut_values)
        onnx.save(model, str(front_path), save_as_external_data=True, location="front.data")
        del model, graph  # before the sessions load: one copy of the weights at a time
        front = onnxruntime.InferenceSession(str(front_path), sess_options=options, providers=_PROVIDERS)
        back = onnxruntime.InferenceSession(str(back_path), sess_options=options, providers=_PROVIDERS)
    return front, back, cut
