"""Attribute probes: linear classifiers on the probe feature that say which instruments, genre and
mood class a clip has, trained on real renders of the synthetic set and stored as plain arrays.

- **instruments**: one logistic regression per instrument word (multi-label; present at p >= 0.5),
  class-balanced, since some timbres are in most pieces and others in few;
- **genre**: one multinomial logistic regression over the genres;
- **mood class**: the synthetic set picks a piece's moods from ``MOOD_CHOICES[(mode, energetic)]``,
  and what the audio carries is that pair: the mode in its harmony and "energetic" in its tempo
  (``tempo >= ENERGETIC_TEMPO``). The words within one class (happy, upbeat, cheerful) differ only
  in loudness and a crescendo drawn from overlapping ranges, so the probe classifies the pair
  (``"major fast"``, ``"minor slow"``, ...), and a request's moods are scored by their class.

Features are standardised with the training set's mean and spread; the probes' embedding (the
standardised rows) is also an ``AudioEmbedder``, so ``fad.frechet_audio_distance(a, b, probes)`` is
the Fréchet distance in it. ``accuracy`` holds each probe's figures on held-out real renders (every
``held_out_every``-th example is kept out of training): what prompt adherence is compared against.

Saved as ``probes.npz`` (arrays, read with ``allow_pickle=False``) and ``probes.json`` (classes,
feature settings, accuracy, how they were trained).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from musicgen_jax.data.synthetic import (
    ENERGETIC_TEMPO,
    INSTRUMENT_WORDS,
    MOOD_CHOICES,
    STYLES,
    TIMBRES,
    PieceSpec,
    SyntheticExample,
)
from musicgen_jax.eval.probe_features import FEATURE_DIMENSION, HOP_SECONDS, WINDOW_SECONDS, ProbeEmbedder

PROBES_KIND = "musicgen_jax.eval.probes"
FORMAT_VERSION = 1
ARRAYS_NAME, INFO_NAME = "probes.npz", "probes.json"
INSTRUMENT_CLASSES: tuple[str, ...] = tuple(INSTRUMENT_WORDS[t] for t in TIMBRES)
GENRE_CLASSES: tuple[str, ...] = tuple(STYLES)
PROBE_NAMES = ("instruments", "genre", "mood")


def mood_class(mode: str, energetic: bool) -> str:
    """The audible class of a ``MOOD_CHOICES`` key: ``"major fast"``, ``"minor slow"``, ..."""
    return f"{mode} {'fast' if energetic else 'slow'}"


MOOD_CLASSES: tuple[str, ...] = tuple(mood_class(mode, energetic) for mode, energetic in MOOD_CHOICES)
_CLASS_OF_MOOD: dict[str, str] = {
    mood: mood_class(mode, energetic) for (mode, energetic), moods in MOOD_CHOICES.items() for mood in moods
}


def requested_mood_class(moods: Iterable[str]) -> str | None:
    """The one class ``moods`` belong to; ``None`` for none, unknown words or a mix of classes."""
    classes = {_CLASS_OF_MOOD.get(mood) for mood in moods}
    return next(iter(classes)) if len(classes) == 1 and None not in classes else None


class ProbeError(ValueError):
    """A probe directory that is missing, incomplete, or made for another feature."""


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """``classes`` scored by ``features @ coef.T + intercept``: independent sigmoids when
    ``multilabel`` (one binary probe per class), else one softmax."""

    classes: tuple[str, ...]
    coef: np.ndarray  # [classes, features]
    intercept: np.ndarray  # [classes]
    multilabel: bool

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """``[n, classes]`` probabilities of standardised ``[n, features]``."""
        logits = features @ self.coef.T + self.intercept
        if self.multilabel:
            return 1.0 / (1.0 + np.exp(-logits))
        logits = logits - logits.max(axis=1, keepdims=True)
        exponentials = np.exp(logits)
        return exponentials / exponentials.sum(axis=1, keepdims=True)


@dataclasses.dataclass(frozen=True)
class ProbePrediction:
    instruments: tuple[str, ...]  # detected words, in INSTRUMENT_CLASSES order
    instrument_probabilities: dict[str, float]
    genre: str
    genre_probabilities: dict[str, float]
    mood: str  # a MOOD_CLASSES entry
    mood_probabilities: dict[str, float]


def _probabilities(probe: LinearProbe, row: np.ndarray) -> dict[str, float]:
    return dict(zip(probe.classes, map(float, row), strict=True))


@dataclasses.dataclass(frozen=True)
class AttributeProbes:
    feature_mean: np.ndarray  # [FEATURE_DIMENSION]
    feature_scale: np.ndarray  # [FEATURE_DIMENSION]
    instruments: LinearProbe
    genre: LinearProbe
    mood: LinearProbe
    accuracy: dict[str, Any]  # figures on held-out real renders; see probe_accuracy
    training: dict[str, Any]  # how they were trained (counts, settings), for the record

    name: ClassVar[str] = "probe"  # as an AudioEmbedder

    # ------------------------------------------------------------------ features and predictions

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Standardised probe features of each window, ``[windows, FEATURE_DIMENSION]``."""
        return (ProbeEmbedder().embed(audio, sample_rate) - self.feature_mean) / self.feature_scale

    def clip_features(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """The standardised feature ``[FEATURE_DIMENSION]`` the probes classify: the windows' mean."""
        return self.embed(audio, sample_rate).mean(axis=0)

    def predict_features(self, features: np.ndarray) -> list[ProbePrediction]:
        """Predictions for standardised clip features ``[n, FEATURE_DIMENSION]``."""
        instruments = self.instruments.probabilities(features)  # [n, instruments]
        genres, moods = self.genre.probabilities(features), self.mood.probabilities(features)
        return [
            ProbePrediction(
                instruments=tuple(w for w, p in zip(self.instruments.classes, i, strict=True) if p >= 0.5),
                instrument_probabilities=_probabilities(self.instruments, i),
                genre=self.genre.classes[int(np.argmax(g))],
                genre_probabilities=_probabilities(self.genre, g),
                mood=self.mood.classes[int(np.argmax(m))],
                mood_probabilities=_probabilities(self.mood, m),
            )
            for i, g, m in zip(instruments, genres, moods, strict=True)
        ]

    def predict(self, audio: np.ndarray, sample_rate: int) -> ProbePrediction:
        return self.predict_features(self.clip_features(audio, sample_rate)[None])[0]

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls, examples: Iterable[SyntheticExample], *, held_out_every: int = 4, regularization: float = 1.0
    ) -> AttributeProbes:
        """Fit the probes on ``examples`` (rendered pieces; consumed one at a time, so a generator
        keeps memory flat) less every ``held_out_every``-th, and measure them on those."""
        from sklearn.linear_model import LogisticRegression

        if held_out_every < 2:
            raise ValueError(f"held_out_every must be at least 2, got {held_out_every}")
        embedder, rows, specs = ProbeEmbedder(), [], []
        for example in examples:
            rows.append(embedder.embed(example.audio, example.sample_rate).mean(axis=0))
            specs.append(example.spec)
        held_out = np.arange(len(specs)) % held_out_every == held_out_every - 1
        if held_out.sum() < 2:
            raise ValueError(f"{len(specs)} examples leave fewer than 2 held out; give more examples")
        raw = np.stack(rows)  # [examples, features]
        mean, scale = raw[~held_out].mean(axis=0), raw[~held_out].std(axis=0) + 1e-6
        features = (raw - mean) / scale
        train, test = features[~held_out], features[held_out]
        labels = _labels(specs)

        def fit(targets: np.ndarray, what: str, balanced: bool = False) -> LogisticRegression:
            if len(set(targets[~held_out])) < 2:
                raise ValueError(f"the training examples all have the same {what}; give more examples")
            model = LogisticRegression(
                C=regularization, max_iter=5000, class_weight="balanced" if balanced else None
            )
            return model.fit(train, targets[~held_out])

        binaries = [fit(labels["instruments"][:, i], word, True) for i, word in enumerate(INSTRUMENT_CLASSES)]
        genre, mood = fit(labels["genre"], "genre"), fit(labels["mood"], "mood class")
        probes = cls(
            feature_mean=mean,
            feature_scale=scale,
            instruments=LinearProbe(
                INSTRUMENT_CLASSES,
                np.concatenate([b.coef_ for b in binaries]),
                np.concatenate([b.intercept_ for b in binaries]),
                multilabel=True,
            ),
            genre=_softmax_probe(genre),
            mood=_softmax_probe(mood),
            accuracy={},
            training={
                "examples": len(specs),
                "trained_on": int((~held_out).sum()),
                "held_out": int(held_out.sum()),
                "held_out_every": held_out_every,
                "regularization": regularization,
            },
        )
        accuracy = probe_accuracy(probes.predict_features(test), [s for s, h in zip(specs, held_out) if h])
        return dataclasses.replace(probes, accuracy=accuracy)

    # ------------------------------------------------------------------ files

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {"feature_mean": self.feature_mean, "feature_scale": self.feature_scale}
        for name in PROBE_NAMES:
            probe = getattr(self, name)
            arrays |= {f"{name}_coef": probe.coef, f"{name}_intercept": probe.intercept}
        np.savez(directory / ARRAYS_NAME, **arrays)
        info = {
            "kind": PROBES_KIND,
            "version": FORMAT_VERSION,
            "feature": {
                "name": ProbeEmbedder.name,
                "sample_rate": ProbeEmbedder.sample_rate,
                "dimension": FEATURE_DIMENSION,
                "window_seconds": WINDOW_SECONDS,
                "hop_seconds": HOP_SECONDS,
            },
            "classes": {name: list(getattr(self, name).classes) for name in PROBE_NAMES},
            "accuracy": self.accuracy,
            "training": self.training,
        }
        (directory / INFO_NAME).write_text(json.dumps(info, indent=2, allow_nan=False) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> AttributeProbes:
        directory = Path(directory)
        arrays_path, info_path = directory / ARRAYS_NAME, directory / INFO_NAME
        if not arrays_path.is_file() or not info_path.is_file():
            raise ProbeError(f"{directory} is not a probe directory: it needs {ARRAYS_NAME} and {INFO_NAME}")
        try:
            info = json.loads(info_path.read_text())
            with np.load(arrays_path, allow_pickle=False) as data:
                arrays = {key: np.asarray(data[key], dtype=np.float64) for key in data.files}
            if info.get("kind") != PROBES_KIND:
                raise ProbeError(f"{info_path} is not a probes file (kind {info.get('kind')!r})")
            if info["feature"]["dimension"] != FEATURE_DIMENSION:
                raise ProbeError(
                    f"{directory} was trained on {info['feature']['dimension']}-d features; this "
                    f"version computes {FEATURE_DIMENSION}-d ones: train the probes again"
                )
            probes = {
                name: LinearProbe(
                    tuple(info["classes"][name]),
                    arrays[f"{name}_coef"],
                    arrays[f"{name}_intercept"],
                    multilabel=name == "instruments",
                )
                for name in PROBE_NAMES
            }
            mean, scale = arrays["feature_mean"], arrays["feature_scale"]
        except (KeyError, TypeError, ValueError, OSError) as error:
            if isinstance(error, ProbeError):
                raise
            raise ProbeError(f"{directory} holds incomplete or unreadable probes: {error!r}") from None
        for name, probe in probes.items():
            if probe.coef.shape != (len(probe.classes), FEATURE_DIMENSION) or probe.intercept.shape != (
                len(probe.classes),
            ):
                raise ProbeError(f"{directory}: the {name} probe's arrays do not match its classes")
        return cls(
            mean, scale, **probes, accuracy=info.get("accuracy", {}), training=info.get("training", {})
        )


def _softmax_probe(model) -> LinearProbe:
    """A fitted sklearn ``LogisticRegression`` as a softmax probe. With two classes sklearn keeps one
    row ``z`` for the second; the rows ``(-z/2, z/2)`` give the same probabilities under a softmax."""
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        coef, intercept = np.concatenate([-coef, coef]) / 2, np.concatenate([-intercept, intercept]) / 2
    return LinearProbe(tuple(map(str, model.classes_)), coef, intercept, multilabel=False)


def _labels(specs: Sequence[PieceSpec]) -> dict[str, np.ndarray]:
    """Per piece: instrument presence ``[n, instruments]``, genre ``[n]`` and mood class ``[n]``."""
    return {
        "instruments": np.array([[w in s.instruments for w in INSTRUMENT_CLASSES] for s in specs]),
        "genre": np.array([s.genre for s in specs]),
        "mood": np.array([mood_class(s.mode, s.tempo >= ENERGETIC_TEMPO) for s in specs]),
    }


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _class_figures(predicted: Sequence[str], true: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    pairs = [(str(p), str(t)) for p, t in zip(predicted, true, strict=True)]  # plain str, for JSON
    return {
        "accuracy": _rate(sum(p == t for p, t in pairs), len(pairs)),
        "recall": {
            c: _rate(sum(p == t == c for p, t in pairs), sum(t == c for _, t in pairs)) for c in classes
        },
        "support": {c: sum(t == c for _, t in pairs) for c in classes},
    }


def probe_accuracy(predictions: Sequence[ProbePrediction], specs: Sequence[PieceSpec]) -> dict[str, Any]:
    """Each probe's figures on pieces whose truth is ``specs``: per instrument word accuracy, F1,
    detection rate (recall) and false-positive rate, and their pooled values; genre and mood-class
    accuracy with per-class recall (``None`` where a class has no example), and mode accuracy."""
    labels = _labels(specs)
    detected = np.array([[w in p.instruments for w in INSTRUMENT_CLASSES] for p in predictions])
    present = labels["instruments"]
    per_word = {}
    for i, word in enumerate(INSTRUMENT_CLASSES):
        tp = int(np.sum(detected[:, i] & present[:, i]))
        fp = int(np.sum(detected[:, i] & ~present[:, i]))
        fn = int(np.sum(~detected[:, i] & present[:, i]))
        per_word[word] = {
            "accuracy": float(np.mean(detected[:, i] == present[:, i])),
            "f1": _rate(2 * tp, 2 * tp + fp + fn),
            "detection_rate": _rate(tp, int(present[:, i].sum())),
            "false_positive_rate": _rate(fp, int((~present[:, i]).sum())),
            "present": int(present[:, i].sum()),
            "absent": int((~present[:, i]).sum()),
        }
    mood = _class_figures([p.mood for p in predictions], labels["mood"], MOOD_CLASSES)
    mood["mode_accuracy"] = _rate(
        sum(p.mood.split()[0] == s.mode for p, s in zip(predictions, specs, strict=True)), len(specs)
    )
    return {
        "clips": len(specs),
        "instruments": {
            "accuracy": float(np.mean(detected == present)),
            "detection_rate": _rate(int(np.sum(detected & present)), int(present.sum())),
            "false_positive_rate": _rate(int(np.sum(detected & ~present)), int((~present).sum())),
            "per_instrument": per_word,
        },
        "genre": _class_figures([p.genre for p in predictions], labels["genre"], GENRE_CLASSES),
        "mood": mood,
    }


def render_examples(
    num_examples: int, *, seed: int = 1, duration: float = 6.0, sample_rate: int = 16000
) -> Iterable[SyntheticExample]:
    """Real renders to train probes on, one at a time: examples ``0..num_examples-1`` of the
    synthetic set with ``seed`` (all pieces, held-out ones included: the probes must recognise the
    held-out combinations they will be asked to judge)."""
    from musicgen_jax.data.synthetic import generate_example

    for index in range(num_examples):
        yield generate_example(index, seed=seed, duration=duration, sample_rate=sample_rate)
