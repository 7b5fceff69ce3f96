"""Evaluating generated audio: signal metrics, Fréchet Audio Distance, CLAP score, reports.

::

    from musicgen_jax.eval import evaluate_audio
    metrics = evaluate_audio(audio, 32000)                      # dict of floats / None, see METRIC_DOCS
    metrics = evaluate_audio(audio, 32000, reference, 44100)    # plus SNR, chroma similarity, ...

    from musicgen_jax.eval import VGGishEmbedder, fad_from_directories
    fad_from_directories("generated/", "reference/", VGGishEmbedder("vggish-10086976.pth")).fad

Shell: ``python -m musicgen_jax.eval {score,fad,clap,report} --help``. Model weights are never
downloaded: embedders load from local paths. Heavy imports (librosa, torch, matplotlib) happen on
first use, so importing this package is cheap.
"""

from musicgen_jax.eval.clap import ClapScore, clap_score
from musicgen_jax.eval.clips import AudioReadError, read_clip
from musicgen_jax.eval.embeddings import (
    AudioEmbedder,
    ClapEmbedder,
    EmbedderError,
    JointEmbedder,
    LogMelStatsEmbedder,
    PannsEmbedder,
    TextEmbedder,
    VGGishEmbedder,
    load_embedder,
)
from musicgen_jax.eval.fad import (
    EmbeddingStatistics,
    FadResult,
    embedding_statistics,
    fad_from_directories,
    frechet_audio_distance,
    frechet_distance,
)
from musicgen_jax.eval.metrics import (
    METRIC_DOCS,
    REFERENCE_KEYS,
    AudioEvaluation,
    MetricUnavailable,
    evaluate_audio,
    evaluate_audio_detailed,
)
from musicgen_jax.eval.report import write_report

__all__ = [
    "METRIC_DOCS",
    "REFERENCE_KEYS",
    "AudioEmbedder",
    "AudioEvaluation",
    "AudioReadError",
    "ClapEmbedder",
    "ClapScore",
    "EmbedderError",
    "EmbeddingStatistics",
    "FadResult",
    "JointEmbedder",
    "LogMelStatsEmbedder",
    "MetricUnavailable",
    "PannsEmbedder",
    "TextEmbedder",
    "VGGishEmbedder",
    "clap_score",
    "embedding_statistics",
    "evaluate_audio",
    "evaluate_audio_detailed",
    "fad_from_directories",
    "frechet_audio_distance",
    "frechet_distance",
    "load_embedder",
    "read_clip",
    "write_report",
]
