"""Audio (and text) embedding models behind one small protocol, for FAD and CLAP score.

An ``AudioEmbedder`` maps a clip to ``[n, d]`` embeddings (one row per analysis window); a
``TextEmbedder`` maps strings to ``[len(texts), d]``; a CLAP-like model is both. FAD and CLAP
score only ever see these protocols, so any model plugs in.

Shipped here:

- ``LogMelStatsEmbedder``: mean and standard deviation of log-mel bands per window. No weights,
  deterministic, fast: for tests and smoke runs, not a perceptual metric.
- ``VGGishEmbedder``: VGGish (Hershey et al. 2017) as in the original FAD paper, from a local
  torchvggish state dict (``vggish-10086976.pth``); needs ``pip install torchvggish``.
- ``PannsEmbedder``: PANNs Cnn14 (Kong et al. 2020) from a local ``Cnn14_mAP=0.431.pth``; needs
  ``pip install panns-inference`` (not installed in this project's environment: the code path is
  written against its source but has not run against real weights here).
- ``ClapEmbedder``: LAION CLAP from a local transformers directory (e.g. a snapshot of
  ``laion/clap-htsat-unfused`` or ``laion/larger_clap_music``); transformers is a dependency already.

Weights are never downloaded: every loader takes a local path and says what it expected when the
path or the package is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from musicgen_jax.audio.io import resample
from musicgen_jax.audio.layout import to_mono


class EmbedderError(RuntimeError):
    """An embedding model that cannot be built: missing weights, missing package, wrong format."""


@runtime_checkable
class AudioEmbedder(Protocol):
    """``embed(audio [channels, samples] or [samples], sample_rate) -> [n, d]`` float embeddings."""

    name: str

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray: ...


@runtime_checkable
class TextEmbedder(Protocol):
    """``embed_text(texts) -> [len(texts), d]`` float embeddings."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class JointEmbedder(AudioEmbedder, TextEmbedder, Protocol):
    """Audio and text embedded into one space (CLAP): what ``clap_score`` needs."""


def _windows(samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """Start/end of windows covering ``samples``; a clip shorter than one window is one (padded) window."""
    if samples <= window:
        return [(0, window)]
    starts = range(0, samples - window + 1, hop)
    return [(start, start + window) for start in starts]


def _pad_to(y: np.ndarray, length: int) -> np.ndarray:
    return y if len(y) >= length else np.pad(y, (0, length - len(y)))


# ----------------------------------------------------------------------------- no weights


class LogMelStatsEmbedder:
    """Per window: mean and standard deviation over time of each log-mel band, ``d = 2 * n_mels``.

    Deterministic and weight-free, so FAD's arithmetic can be tested end to end and a pipeline can be
    smoke-tested without model files. It sees spectral balance and its variation, not musical content.
    """

    name = "logmel"

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 32,
        window_seconds: float = 1.0,
        hop_seconds: float = 0.5,
    ) -> None:
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.window = int(window_seconds * sample_rate)
        self.hop = int(hop_seconds * sample_rate)

    @property
    def dimension(self) -> int:
        return 2 * self.n_mels

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import librosa

        y = resample(to_mono(audio), sample_rate, self.sample_rate)
        rows = []
        for start, end in _windows(len(y), self.window, self.hop):
            segment = _pad_to(y[start:end], end - start)
            mel = librosa.feature.melspectrogram(
                y=segment, sr=self.sample_rate, n_fft=512, hop_length=160, n_mels=self.n_mels
            )
            log_mel = np.log(mel + 1e-6)  # [n_mels, frames]; the offset keeps silence finite
            rows.append(np.concatenate([log_mel.mean(axis=1), log_mel.std(axis=1)]))
        return np.stack(rows).astype(np.float64)  # [windows, 2 * n_mels]


# ----------------------------------------------------------------------------- model loaders


def _require_file(path: str | Path | None, what: str) -> Path:
    if path is None:
        raise EmbedderError(f"{what}: pass the path of a local copy (weights cannot be downloaded here)")
    path = Path(path).expanduser()
    if not path.exists():
        raise EmbedderError(f"{what}: {path} does not exist")
    return path


def _require_package(module: str, install: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise EmbedderError(
            f"{what} needs the {module!r} package ({error}); install it with: {install}"
        ) from None


def _torch_device(device: str):
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EmbedderError(f"device {device!r} requested but CUDA is not available to torch")
    return torch.device(device)


class VGGishEmbedder:
    """VGGish 128-d embeddings of 0.96 s log-mel patches (16 kHz), from a torchvggish state dict.

    The final ReLU and the PCA/quantisation post-processing are left out, as FAD implementations do
    (the Fréchet distance wants the raw embedding layer). Clips shorter than one example (0.975 s)
    are zero-padded.
    """

    name = "vggish"
    sample_rate = 16000
    # One example is 96 frames of 25 ms windows at a 10 ms hop: 95 * 160 + 400 samples.
    example_samples = 15600

    def __init__(self, weights: str | Path | None, device: str = "cpu") -> None:
        path = _require_file(weights, "VGGish weights (torchvggish's vggish-10086976.pth)")
        if path.is_dir():
            raise EmbedderError(f"VGGish weights: expected a .pth file, got the directory {path}")
        _require_package("torchvggish", "pip install torchvggish", "the VGGish embedder")
        import torch
        from torchvggish.torchvggish import VGG, make_layers
        from torchvggish.vggish_input import waveform_to_examples

        model = VGG(make_layers(), postprocess=False)
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as error:  # noqa: BLE001 (torch.load fails in many ways: pickle, zip, key and shape errors)
            raise EmbedderError(f"{path} is not a torchvggish VGGish state dict: {error}") from None
        model.embeddings = torch.nn.Sequential(*list(model.embeddings.children())[:-1])  # drop the last ReLU
        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        self._examples = waveform_to_examples

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        y = resample(to_mono(audio), sample_rate, self.sample_rate).astype(np.float64)
        y = _pad_to(y, self.example_samples)
        examples = self._examples(y, self.sample_rate, return_tensor=False)  # [n, 96 frames, 64 bands]
        batch = torch.as_tensor(examples, dtype=torch.float32)[:, None].to(self.device)  # [n, 1, 96, 64]
        with torch.no_grad():
            return self.model(batch).cpu().numpy().astype(np.float64).reshape(len(examples), -1)  # [n, 128]


class PannsEmbedder:
    """PANNs Cnn14 2048-d embeddings (32 kHz), one per window (or one per clip when ``window_seconds``
    is ``None``), from a local ``Cnn14_mAP=0.431.pth``.

    ``panns_inference`` downloads its label list when first imported unless
    ``~/panns_data/class_labels_indices.csv`` exists, so that file is required too; the checkpoint is
    loaded into ``panns_inference.models.Cnn14`` directly (its ``AudioTagging`` wrapper would try to
    download weights it considers too small).
    """

    name = "panns"
    sample_rate = 32000

    def __init__(
        self, weights: str | Path | None, device: str = "cpu", window_seconds: float | None = None
    ) -> None:
        path = _require_file(weights, "PANNs Cnn14 checkpoint (Cnn14_mAP=0.431.pth)")
        labels = Path.home() / "panns_data" / "class_labels_indices.csv"
        if not labels.is_file():
            raise EmbedderError(
                f"panns_inference downloads its AudioSet label list on import; put a copy at {labels} first"
            )
        _require_package("panns_inference", "pip install panns-inference", "the PANNs embedder")
        import torch
        from panns_inference.models import Cnn14

        model = Cnn14(
            sample_rate=32000,
            window_size=1024,
            hop_size=320,
            mel_bins=64,
            fmin=50,
            fmax=14000,
            classes_num=527,
        )
        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
            model.load_state_dict(checkpoint.get("model", checkpoint))
        except Exception as error:  # noqa: BLE001 (torch.load fails in many ways: pickle, zip, key and shape errors)
            raise EmbedderError(f"{path} is not a PANNs Cnn14 checkpoint: {error}") from None
        self.device = _torch_device(device)
        self.model = model.to(self.device).eval()
        self.window = None if window_seconds is None else int(window_seconds * self.sample_rate)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        y = resample(to_mono(audio), sample_rate, self.sample_rate)
        y = _pad_to(y, self.sample_rate)  # Cnn14 pools six times over time: give it at least 1 s
        if self.window is None:
            segments = [y]
        else:
            segments = [
                _pad_to(y[start:end], end - start)
                for start, end in _windows(len(y), self.window, self.window)
            ]
        batch = torch.as_tensor(np.stack(segments), dtype=torch.float32).to(self.device)  # [n, samples]
        with torch.no_grad():
            return self.model(batch, None)["embedding"].cpu().numpy().astype(np.float64)  # [n, 2048]


class ClapEmbedder:
    """LAION CLAP audio and text embeddings (L2-normalised) from a local transformers directory.

    Audio is resampled to 48 kHz and cut into 10 s windows (the model's input length; a shorter clip
    or last window is repeat-padded by the feature extractor), one embedding per window.
    """

    name = "clap"
    sample_rate = 48000
    window_seconds = 10.0

    def __init__(self, model_dir: str | Path | None, device: str = "cpu") -> None:
        path = _require_file(
            model_dir, "CLAP model (a transformers directory, e.g. laion/clap-htsat-unfused)"
        )
        if path.is_file():
            raise EmbedderError(
                f"{path} is a file: laion_clap checkpoints (.pt) are not read directly; convert one with "
                "transformers' models/clap/convert_clap_original_pytorch_to_hf.py and pass the "
                "output directory"
            )
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        try:
            self.model = ClapModel.from_pretrained(str(path), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            # Unfused models take one mel channel ("rand_trunc"; the extractor's default "fusion" makes
            # four). Either mode only draws random crops from clips over 10 s, and windows here never
            # are, so embedding is deterministic.
            fused = bool(getattr(self.model.config.audio_config, "enable_fusion", False))
            self.feature_extractor = ClapFeatureExtractor.from_pretrained(
                str(path), local_files_only=True, truncation="fusion" if fused else "rand_trunc"
            )
        except (OSError, ValueError, KeyError) as error:
            raise EmbedderError(f"{path} is not a transformers CLAP directory: {error}") from None
        self.device = _torch_device(device)
        self.model = self.model.to(self.device).eval()

    @staticmethod
    def _features(output) -> np.ndarray:
        # transformers 4.x returns the projected, normalised tensor; 5.x an output whose pooler_output is it.
        tensor = output if hasattr(output, "detach") else output.pooler_output
        return tensor.detach().cpu().numpy().astype(np.float64)

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        y = resample(to_mono(audio), sample_rate, self.sample_rate)
        if len(y) == 0:
            raise ValueError("cannot embed an empty clip")
        window = int(self.window_seconds * self.sample_rate)
        # Back-to-back 10 s windows; a short last one is repeat-padded by the extractor, as CLAP was
        # trained, unless it is a sliver (< 1 s) after at least one whole window.
        segments = [y[start : start + window] for start in range(0, len(y), window)]
        if len(segments) > 1 and len(segments[-1]) < self.sample_rate:
            segments.pop()
        inputs = self.feature_extractor(segments, sampling_rate=self.sample_rate, return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with torch.no_grad():
            return self._features(self.model.get_audio_features(**inputs))  # [windows, projection_dim]

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        tokens = {
            key: value.to(self.device)
            for key, value in tokens.items()
            if key in ("input_ids", "attention_mask")
        }
        with torch.no_grad():
            return self._features(self.model.get_text_features(**tokens))  # [texts, projection_dim]


EMBEDDERS = {
    "logmel": "LogMelStatsEmbedder: no weights; for tests and smoke runs",
    "vggish": "VGGishEmbedder: --weights vggish-10086976.pth (pip install torchvggish)",
    "panns": "PannsEmbedder: --weights Cnn14_mAP=0.431.pth (pip install panns-inference)",
    "clap": "ClapEmbedder: --weights a transformers CLAP directory",
}


def load_embedder(name: str, weights: str | Path | None = None, device: str = "cpu") -> AudioEmbedder:
    """Build the embedder called ``name`` (a key of ``EMBEDDERS``) from local ``weights``."""
    if name == "logmel":
        return LogMelStatsEmbedder()
    if name == "vggish":
        return VGGishEmbedder(weights, device)
    if name == "panns":
        return PannsEmbedder(weights, device)
    if name == "clap":
        return ClapEmbedder(weights, device)
    raise EmbedderError(f"unknown embedder {name!r}; choose from {', '.join(EMBEDDERS)}")
