"""Generation: requests to codec frames on the device (delay pattern, sampling loop, guidance, beams)."""

from musicgen_jax.generation.call import GenerationOutput
from musicgen_jax.generation.engine import GenerationEngine
from musicgen_jax.generation.params import GenerationParams, GenerationParamsError, GenerationRequest
from musicgen_jax.generation.shapes import ShapePlan

__all__ = [
    "GenerationEngine",
    "GenerationOutput",
    "GenerationParams",
    "GenerationParamsError",
    "GenerationRequest",
    "ShapePlan",
]
