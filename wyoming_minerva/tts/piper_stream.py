"""A Piper voice's ONNX model cut in two at its decoder, so the audio of a piece is decoded in bounded chunks.

Why: Piper's VITS decoder (HiFi-GAN) holds activations in proportion to the audio it makes (~20 MiB per second
of speech) and gives nothing until it has made all of it (~70 % of a piece's CPU). Everything before it (text
encoder, durations, flow) works on the whole piece, so prosody is decided for the whole piece as before; the
decoder only sees a few latent frames around each output sample, so decoding the latent in chunks with `PAD_FRAMES` of
context on each side gives the same samples (bit-exact on the bundled voice), holds memory to one chunk, and
lets the first chunk play while the rest is decoded. A model whose graph does not have this shape (or when the
`onnx` package is missing) runs whole, as before.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
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
CHUNK_FRAMES = 192  # ~2.2 s: bounds the decoder's memory (~41 MiB); larger chunks waste less on padding
CUT_TIMEOUT_SECONDS = 300  # cutting a large voice on a slow machine
_PROVIDERS = ["CPUExecutionProvider"]


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
    """The two sessions of a cut model, or None when the model has no decoder to cut at.

    The cutting runs in a child process: parsing and rewriting the graph holds two copies of the weights for
    a moment, and the child gives all of that back when it exits. The parts are loaded from files (a session
    made from bytes in memory keeps a second copy of the weights for its whole life); the front part's weights
    are in an external file that ONNX Runtime maps instead of copying.
    """
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="minerva-voice-") as folder:
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(
            [sys.executable, "-m", __name__, str(model_path), folder],
            capture_output=True,
            text=True,
            timeout=CUT_TIMEOUT_SECONDS,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            raise RuntimeError(lines[-1] if lines else f"exit status {done.returncode}")
        if not done.stdout.strip():
            return None
        names = json.loads(done.stdout)
        cut = Cut(names[0], tuple(names[1:]))
        front = onnxruntime.InferenceSession(
            str(Path(folder) / "front.onnx"), sess_options=options, providers=_PROVIDERS
        )
        back = onnxruntime.InferenceSession(str(Path(folder) / "back.onnx"), sess_options=options, providers=_PROVIDERS)
    return front, back, cut


def write_parts(model_path: Path, folder: Path) -> Cut | None:
    """Write the front part (front.onnx + front.data) and the back part (back.onnx) of a model; None: no cut."""
    import onnx

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
    back_graph = onnx.helper.make_graph(
        [graph.node[index] for index in back_nodes],
        "decoder",
        cut_values,
        list(graph.output),
        [tensor for tensor in graph.initializer if tensor.name in back_inputs],
    )
    back_model = onnx.helper.make_model(back_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    onnx.save(back_model, str(folder / "back.onnx"))
    # The front part is the model itself, trimmed in place.
    for index in sorted(back_set, reverse=True):
        del graph.node[index]
    for index in reversed(range(len(graph.initializer))):
        if graph.initializer[index].name not in front_inputs:
            del graph.initializer[index]
    del graph.output[:]
    graph.output.extend(cut_values)
    onnx.save(model, str(folder / "front.onnx"), save_as_external_data=True, location="front.data")
    return cut


if __name__ == "__main__":  # the child process of _load_cut: MODEL FOLDER → the cut's names as JSON, or nothing
    try:
        import onnx  # noqa: F401
    except ImportError:
        sys.exit(0)  # no onnx package: the voice runs whole
    written = write_parts(Path(sys.argv[1]), Path(sys.argv[2]))
    print(json.dumps(list(written.names)) if written else "")
