"""What a further attempt changes after a *content* failure: the one retry ladder.

Two kinds of failure, two policies:
- **transport** (`timeout`, `rate_limited`, `http_error`, `connection`): the request was fine, the way to
  the model was not. `LLMClient` retries the *same* request with backoff, and a later attempt (the
  background retrier, a re-opened task) sends the same request again. Nothing here changes that.
- **content** (`cut_off`, `malformed_reply`, `CONTENT_FAILURES`): the model answered, uselessly. Decoding is
  greedy (temperature 0), so the identical request gets the identical reply: re-sending it is wasted
  time and money. Measured on Gemma 3 270M: all 17 BC5CDR dev sentences stopped by the loop guard in the
  prompt grid's base cell looped again, token for token, on a second identical request.

So every attempt after a content failure climbs one rung of `LADDER`, a documented and deterministic
sequence of changed requests. The rung of a task's next attempt comes from its failure record
(`LLMLabelStore`: the rung that failed and its reason, see `next_rung`): a content failure moves one rung
up, a transport failure repeats the rung that could not be asked. Past the last rung the last one is
repeated with a new seed, so no two attempts on a task send the same request. Each rung's sampling seed
is derived from the task text and the rung, so a rung is reproducible (a re-run, another process) and its
reply cacheable under its own key (`ReplyCache.key` takes the sampling; demonstrations are in the
rendered messages). Failed replies are never cached, on any rung.

The ladder was chosen by measurement (`python -m benchmarks.content_retry`, docs/local-llm.md): the 17 BC5CDR
dev sentences (of 200) that Gemma 3 270M looped on with 5 k-NN demos, each asked once more with every candidate:

| candidate                       | answered | F1 on those |
|---------------------------------|----------|-------------|
| the same request again          |   0/17   |      -      |
| 2 demos, greedy                 |  15/17   |    0.431    |
| 2 demos, temperature 0.3        |  15/17   |    0.333    |
| 5 demos, temperature 0.7        |  14/17   |    0.318    |
| 5 demos, temperature 0.3        |   6/17   |    0.308    |
| no demos, greedy (zero-shot)    |  14/17   |    0.000    |

(F1 0.453 on the sentences the base request answered.) Fewer demonstrations, still greedy, comes first: it
answered most and best. Zero-shot is no rung: it "answered" with no entities, a wrong "no entities" that
would be recorded as the task's label, worse than a failure. The ladder recovered 15, 16 and 17 of the 17
by rungs 1, 2 and 3 (37 calls, F1 0.429 on the 17, instead of up to 6 x 17 identical failing calls). A
lower `max_tokens` is no rung: a reply cut at the cap is a `cut_off` by definition (the loops ran 27 to
207 tokens before the loop guard stopped them; no answer of the 183 was longer than 74).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from backend.annotator.client import GREEDY, Sampling

# Failures of the reply itself: a changed request may fix them, the same request cannot.
CONTENT_FAILURES = frozenset({"cut_off", "malformed_reply"})


def derived_seed(text: str, rung: int) -> int:
    """A sampling seed fixed by the task text and the rung (31 bits: every OpenAI-compatible server takes it)."""
    digest = hashlib.sha256(f"{rung}\x00{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


@dataclass(frozen=True)
class RequestVariant:
    """How one attempt's request differs from the base request (rung 0: k demonstrations, greedy)."""

    rung: int = 0
    name: str = "base"
    demo_share: float = 1.0  # share of the annotator's k demonstrations kept, the most similar ones
    temperature: float = 0.0  # 0: greedy, no seed sent

    def k(self, base_k: int) -> int:
        """Demonstrations for this rung: k=5 at a share of 0.5 keeps the 2 most similar."""
        return max(0, int(base_k * self.demo_share))

    def sampling(self, text: str) -> Sampling:
        if self.temperature <= 0:
            return GREEDY
        return Sampling(self.temperature, derived_seed(text, self.rung))

    def describe(self, n_demos: int) -> str:
        """What was sent, for `llm_status` and logs: `rung 2, sampled: 5 demos, temperature 0.3`."""
        decoding = "greedy" if self.temperature <= 0 else f"temperature {self.temperature:g}"
        return f"rung {self.rung}, {self.name}: {n_demos} demos, {decoding}"


BASE = RequestVariant()
LADDER: tuple[RequestVariant, ...] = (
    BASE,
    RequestVariant(1, "fewer demos", demo_share=0.5),
    RequestVariant(2, "fewer demos, sampled", demo_share=0.5, temperature=0.3),
    RequestVariant(3, "sampled", temperature=0.7),  # the last rung is sampled: past it, each attempt a new seed
)


def variant_for(rung: int) -> RequestVariant:
    """The request of `rung` (0 = base). Past the ladder's end: its last rung, renumbered (a new seed)."""
    if rung < len(LADDER):
        return LADDER[max(0, rung)]
    last = LADDER[-1]
    return RequestVariant(rung, last.name, last.demo_share, last.temperature)


def next_rung(failed_rung: int, reason: str) -> int:
    """The rung to ask next after a failure on `failed_rung`: up one after a content failure, else the same."""
    return failed_rung + 1 if reason in CONTENT_FAILURES else failed_rung
