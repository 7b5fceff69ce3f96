"""Prompt adherence: do generated clips have the tempo, instruments, genre and mood they were asked for?

Per clip, the project's beat tracker measures the tempo (a *hit* within ±5% of the request; half or
double time is an *octave* error, counted apart and not a hit) and the attribute probes
(:mod:`musicgen_jax.eval.probes`) name the instruments, genre and mood class they hear. Per
condition (e.g. guidance 3, guidance 1, unconditional, shuffled prompts):

- tempo hit rate and octave-error rate;
- instrument detection rate (requested instruments the probe detects) and false-positive rate
  (non-requested ones it detects), each beside what the probe achieves *on real renders* for the
  same requests: the mean of its real per-instrument rates over the requested (or non-requested)
  instruments. Their ratio is the figure the demo model must keep at or above
  :data:`ADHERENCE_TARGET` ("detected at no less than 80% of the probe's accuracy on real renders");
- genre accuracy and mood-class accuracy, likewise against the probe's real per-class recall;
- the Fréchet distance to real renders in the probes' embedding (:func:`probe_frechet_distance`),
  between the sets; being a distance between sets it cannot see which clip was asked for what
  (re-pairing clips with other prompts leaves it unchanged), so beside it
- the *paired* Fréchet distance, where clips name their prompt's real render
  (:attr:`GeneratedClip.reference`) and a second real render of every prompt is given: between the
  (clip, its prompt's render) pairs and the (second render, first render) pairs of the same
  prompts, each pair one vector of both clips' features. It sees what the set distance cannot: a
  clip re-paired with another prompt (or made without listening to its own) breaks the
  resemblance between the halves that two renders of one prompt have.

Words the probes do not know (an instrument outside the synthetic set's eight) are left unscored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from musicgen_jax.conditioning import Attributes
from musicgen_jax.eval.fad import embedding_statistics, frechet_distance
from musicgen_jax.eval.metrics.rhythm import TEMPO_TOLERANCE, TEMPO_VERDICTS, measured_bpm, tempo_verdict
from musicgen_jax.eval.probes import AttributeProbes, requested_mood_class

ADHERENCE_KIND = "musicgen_jax.eval.adherence"
FORMAT_VERSION = 1
ADHERENCE_TARGET = 0.8  # generated figures must reach this share of the probe's real-render figures
# With fewer clips than feature dimensions a sample covariance is singular and sqrt(S1 S2) is
# ill-defined; the same small ridge on both (features are standardised: each has variance ~1) keeps
# it defined and leaves the distance of a set to itself at 0.
COVARIANCE_RIDGE = 1e-3


@dataclasses.dataclass(frozen=True)
class GeneratedClip:
    """A generated clip, float32 ``[channels, samples]``, and what it was asked to be."""

    name: str
    audio: np.ndarray
    sample_rate: int
    request: Attributes
    text: str = ""  # the prompt, for the report
    reference: int | None = None  # index of its prompt's real render in adherence_report's real_clips


@dataclasses.dataclass(frozen=True)
class ClipAdherence:
    name: str
    text: str
    requested_tempo: float | None
    measured_tempo: float | None
    tempo: str  # a TEMPO_VERDICTS entry
    requested_instruments: tuple[str, ...]
    detected_instruments: tuple[str, ...]
    requested_genre: str | None
    predicted_genre: str
    requested_mood: str | None  # the requested moods' class (probes.requested_mood_class)
    predicted_mood: str


def shuffled_requests(clips: Sequence[GeneratedClip], seed: int = 0) -> list[GeneratedClip]:
    """``clips`` each paired with another clip's request and text (a random cycle, so no clip keeps
    its own): the figures of a model that ignores its prompt."""
    if len(clips) < 2:
        raise ValueError("shuffling needs at least 2 clips")
    order = np.random.default_rng(seed).permutation(len(clips))
    donor = {int(order[i]): int(order[(i + 1) % len(order)]) for i in range(len(order))}
    return [
        dataclasses.replace(
            clip,
            request=clips[donor[i]].request,
            text=clips[donor[i]].text,
            reference=clips[donor[i]].reference,
        )
        for i, clip in enumerate(clips)
    ]


def clip_adherence(
    clip: GeneratedClip, probes: AttributeProbes, rows: np.ndarray, measured_tempo: float | None
) -> ClipAdherence:
    """One clip's verdicts, given its probe embedding ``rows`` ``[windows, features]`` and the tempo
    the beat tracker measured in it (``None``: no beat found)."""
    prediction = probes.predict_features(rows.mean(axis=0)[None])[0]
    request = clip.request
    return ClipAdherence(
        name=clip.name,
        text=clip.text,
        requested_tempo=request.tempo,
        measured_tempo=measured_tempo,
        tempo=tempo_verdict(measured_tempo, request.tempo),
        requested_instruments=request.instruments,
        detected_instruments=prediction.instruments,
        requested_genre=request.genre,
        predicted_genre=prediction.genre,
        requested_mood=requested_mood_class(request.moods),
        predicted_mood=prediction.mood,
    )


def _rate(hits: float, total: float) -> float | None:
    return hits / total if total else None


def _ratio(generated: float | None, real: float | None) -> float | None:
    return generated / real if generated is not None and real else None


def _real_recall(figures: dict[str, Any], label: str) -> float:
    """The probe's real-render recall of ``label``, or its overall accuracy where it had no example."""
    recall = figures["recall"].get(label)
    return figures["accuracy"] if recall is None else recall


def _class_summary(
    pairs: Sequence[tuple[str | None, str]], known: Sequence[str], figures: dict[str, Any]
) -> dict[str, Any]:
    """Accuracy of (requested, predicted) pairs with a known request, against the probe's real figures."""
    scored = [(requested, predicted) for requested, predicted in pairs if requested in known]
    accuracy = _rate(sum(r == p for r, p in scored), len(scored))
    real = float(np.mean([_real_recall(figures, r) for r, _ in scored])) if scored else None
    ratio = _ratio(accuracy, real)
    return {
        "scored": len(scored),
        "accuracy": accuracy,
        "real_accuracy": real,
        "ratio": ratio,
        "meets_target": None if ratio is None else ratio >= ADHERENCE_TARGET,
    }


def _instrument_summary(rows: Sequence[ClipAdherence], probes: AttributeProbes) -> dict[str, Any]:
    words = probes.instruments.classes
    per_word = probes.accuracy["instruments"]["per_instrument"]
    requested = detected = false_positives = absent = 0
    real_detection, real_false_positive, unscored = [], [], 0
    for row in rows:
        wanted = set(row.requested_instruments)
        unscored += len(wanted - set(words))
        for word in words:
            found = word in row.detected_instruments
            if word in wanted:
                requested, detected = requested + 1, detected + found
                real_detection.append(per_word[word]["detection_rate"] or 0.0)
            else:
                absent, false_positives = absent + 1, false_positives + found
                real_false_positive.append(per_word[word]["false_positive_rate"] or 0.0)
    detection = _rate(detected, requested)
    real = float(np.mean(real_detection)) if real_detection else None
    ratio = _ratio(detection, real)
    return {
        "requested": requested,
        "unscored": unscored,
        "detection_rate": detection,
        "real_detection_rate": real,
        "ratio": ratio,
        "meets_target": None if ratio is None else ratio >= ADHERENCE_TARGET,
        "false_positive_rate": _rate(false_positives, absent),
        "real_false_positive_rate": float(np.mean(real_false_positive)) if real_false_positive else None,
    }


def condition_summary(rows: Sequence[ClipAdherence], probes: AttributeProbes) -> dict[str, Any]:
    """The condition's figures (see the module docstring)."""
    verdicts = [row.tempo for row in rows if row.requested_tempo is not None]
    counts = {verdict: verdicts.count(verdict) for verdict in TEMPO_VERDICTS}
    return {
        "clips": len(rows),
        "tempo": {
            "requested": len(verdicts),
            **counts,
            "hit_rate": _rate(counts["kept"], len(verdicts)),
            "octave_rate": _rate(counts["octave"], len(verdicts)),
        },
        "instruments": _instrument_summary(rows, probes),
        "genre": _class_summary(
            [(row.requested_genre, row.predicted_genre) for row in rows],
            probes.genre.classes,
            probes.accuracy["genre"],
        ),
        "mood": _class_summary(
            [(row.requested_mood, row.predicted_mood) for row in rows],
            probes.mood.classes,
            probes.accuracy["mood"],
        ),
    }


def probe_frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """Fréchet distance between two sets of probe embedding rows ``[n, features]`` (see
    :data:`COVARIANCE_RIDGE`)."""
    a, b = embedding_statistics(first), embedding_statistics(second)
    ridge = COVARIANCE_RIDGE * np.eye(a.mean.shape[0])
    return frechet_distance(a.mean, a.covariance + ridge, b.mean, b.covariance + ridge)


def adherence_report(
    conditions: Mapping[str, Sequence[GeneratedClip]],
    probes: AttributeProbes,
    real_clips: Sequence[tuple[np.ndarray, int]],
    second_renders: Sequence[tuple[np.ndarray, int]] | None = None,
) -> dict[str, Any]:
    """The JSON-ready report: per condition its summary, its Fréchet distance to ``real_clips``
    (``(audio, sample_rate)`` renders of the synthetic set), its prompt-wise distance where its clips
    name a ``reference`` among ``real_clips`` and ``second_renders`` gives another render of each,
    and per-clip rows; beside them the distance between
    the two halves of the real clips, the floor a set of that size reaches."""
    if not conditions or any(len(clips) < 2 for clips in conditions.values()):
        raise ValueError("give at least one condition, each of at least 2 clips")
    if len(real_clips) < 4:
        raise ValueError(f"give at least 4 real clips, got {len(real_clips)}")
    references = {c.reference for clips in conditions.values() for c in clips} - {None}
    if references and not references <= set(range(len(real_clips))):
        raise ValueError(
            f"clip references {sorted(references)} are not all among {len(real_clips)} real clips"
        )
    real_rows = [probes.embed(audio, sample_rate) for audio, sample_rate in real_clips]
    real = np.concatenate(real_rows)
    real_features = np.stack([rows.mean(axis=0) for rows in real_rows])  # [real clips, features]
    reference_pairs = None
    if second_renders is not None:
        second = np.stack([probes.clip_features(audio, rate) for audio, rate in second_renders])
        reference_pairs = np.concatenate([second, real_features], axis=1)  # [real clips, 2 features]
    # Conditions may share audio (the shuffled-prompt condition re-pairs another's clips): measure
    # each waveform once.
    measured: dict[tuple[int, int], tuple[np.ndarray, float | None]] = {}

    def measure(clip: GeneratedClip) -> tuple[np.ndarray, float | None]:
        key = (id(clip.audio), clip.sample_rate)
        if key not in measured:
            rows = probes.embed(clip.audio, clip.sample_rate)
            measured[key] = rows, measured_bpm(clip.audio, clip.sample_rate)
        return measured[key]

    report: dict[str, Any] = {
        "kind": ADHERENCE_KIND,
        "version": FORMAT_VERSION,
        "target_ratio": ADHERENCE_TARGET,
        "tempo_tolerance": TEMPO_TOLERANCE,
        "probe_accuracy": probes.accuracy,
        "real_clips": len(real_clips),
        "real_halves_frechet_distance": probe_frechet_distance(
            np.concatenate(real_rows[0::2]), np.concatenate(real_rows[1::2])
        ),
        "conditions": {},
    }
    for name, clips in conditions.items():
        measurements = [measure(clip) for clip in clips]
        clip_rows = [clip_adherence(clip, probes, *m) for clip, m in zip(clips, measurements, strict=True)]
        rows = np.concatenate([m[0] for m in measurements])
        pairs = [
            np.concatenate([m[0].mean(axis=0), real_features[clip.reference]])
            for clip, m in zip(clips, measurements, strict=True)
            if clip.reference is not None
        ]
        paired = None
        if reference_pairs is not None and len(pairs) >= 2:
            paired = probe_frechet_distance(np.stack(pairs), reference_pairs)
        report["conditions"][name] = {
            "summary": condition_summary(clip_rows, probes),
            "frechet_distance_to_real": probe_frechet_distance(rows, real),
            "paired_frechet_distance": paired,
            "clips": [dataclasses.asdict(row) for row in clip_rows],
        }
    return report
