"""Evaluating generated audio: signal metrics, Fréchet Audio Distance, CLAP score, reports.

::

    from musicgen_jax.eval import evaluate_audio
    metrics = evaluate_audio(audio, 32000)                      # dict of floats / None, see METRIC_DOCS
    metrics = evaluate_audio(audio, 32000, reference, 44100)    # plus SNR, chroma similarity, ...

    from musicgen_jax.eval import VGGishEmbedder, fad_from_directories
    fad_from_directories("generated/", "reference/", VGGishEmbedder("vggish-10086976.pth")).fad

Prompt adherence of the demo model (``AttributeProbes`` trained on renders of the synthetic set,
``adherence_report``, ``write_adherence_html``)::

    probes = AttributeProbes.train(render_examples(600))      # or AttributeProbes.load("probes/")
    report = adherence_report({"guidance 3": clips, ...}, probes, real_clips)
    write_adherence_html(report, "adherence.html", {"guidance 3": clips, ...})

Shell: ``python -m musicgen_jax.eval {score,fad,clap,report,probes} --help``. Model weights are never
downloaded: embedders load from local paths. Heavy imports (librosa, torch, matplotlib) happen on
first use, so importing this package is cheap.
"""

from musicgen_jax.eval.adherence import (
    ADHERENCE_TARGET,
    ClipAdherence,
    GeneratedClip,
    adherence_report,
    probe_frechet_distance,
    shuffled_requests,
)
from musicgen_jax.eval.adherence_html import write_adherence_html
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
from musicgen_jax.eval.probe_features import ProbeEmbedder
from musicgen_jax.eval.probes import AttributeProbes, ProbeError, ProbePrediction, render_examples
from musicgen_jax.eval.report import write_report

__all__ = [
    "ADHERENCE_TARGET",
    "METRIC_DOCS",
    "REFERENCE_KEYS",
    "AttributeProbes",
    "AudioEmbedder",
    "AudioEvaluation",
    "AudioReadError",
    "ClapEmbedder",
    "ClapScore",
    "ClipAdherence",
    "EmbedderError",
    "EmbeddingStatistics",
    "FadResult",
    "GeneratedClip",
    "JointEmbedder",
    "LogMelStatsEmbedder",
    "MetricUnavailable",
    "PannsEmbedder",
    "ProbeEmbedder",
    "ProbeError",
    "ProbePrediction",
    "TextEmbedder",
    "VGGishEmbedder",
    "adherence_report",
    "clap_score",
    "embedding_statistics",
    "evaluate_audio",
    "evaluate_audio_detailed",
    "fad_from_directories",
    "frechet_audio_distance",
    "frechet_distance",
    "load_embedder",
    "probe_frechet_distance",
    "read_clip",
    "render_examples",
    "shuffled_requests",
    "write_adherence_html",
    "write_report",
]
