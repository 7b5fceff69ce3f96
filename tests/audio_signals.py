"""Test signals shared by the evaluation tests."""

from __future__ import annotations

import numpy as np

RATE = 16000


def tone(frequency: float, duration: float = 2.0, amplitude: float = 0.3, rate: int = RATE) -> np.ndarray:
    return amplitude * np.sin(2 * np.pi * frequency * np.arange(int(duration * rate)) / rate)
