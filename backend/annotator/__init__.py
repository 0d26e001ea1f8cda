"""The LLM annotator: prompt, client, cache, cost ledger, k-NN demos, reply parsing and grounding."""

from backend.annotator.annotator import AnnotationOutcome, LLMAnnotator
from backend.annotator.cache import ReplyCache
from backend.annotator.client import Completion, LLMCallError, LLMClient, entities_json_schema
from backend.annotator.demos import DemoIndex
from backend.annotator.ledger import CostLedger
from backend.annotator.parsing import GroundingResult, MalformedReplyError, ground, parse_reply
from backend.annotator.prompt import Demo, PromptTemplate

__all__ = [
    "AnnotationOutcome",
    "Completion",
    "CostLedger",
    "Demo",
    "DemoIndex",
    "GroundingResult",
    "LLMAnnotator",
    "LLMCallError",
    "LLMClient",
    "MalformedReplyError",
    "PromptTemplate",
    "ReplyCache",
    "entities_json_schema",
    "ground",
    "parse_reply",
]
