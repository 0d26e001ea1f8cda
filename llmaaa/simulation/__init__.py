"""The SIMULATED LLM: a seeded noise model over gold labels, usable in-process or over HTTP.

- `noise.NoiseModel`: corrupts a sentence's gold spans (missed, wrong type, boundary, spurious);
- `teacher.SimulatedTeacher`: answers known sentences; `teacher.parse_prompt` reads ner.v1 prompts;
- `server.create_app`: an OpenAI-compatible Flask app with fault injection (`llmaaa fake-llm`).

See docs/simulated-llm.md. Its errors are random, not systematic like a real LLM's.
"""

from llmaaa.simulation.noise import NoiseModel, NoiseRates
from llmaaa.simulation.teacher import SimulatedTeacher, demo_surface_forms, parse_prompt

__all__ = ["NoiseModel", "NoiseRates", "SimulatedTeacher", "demo_surface_forms", "parse_prompt"]
