"""Backend configuration, from the environment (the Label Studio ML backend convention)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, PositiveInt, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every field is an environment variable of the same name, upper-cased.

    Secrets are `SecretStr`, so they print as `**********` in logs, reprs and errors.
    """

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # State: LLM cache, cost ledger, model versions, project state.
    llmaaa_data_dir: Path = Path(".llmaaa")

    # The LLM: any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, the simulation).
    openai_base_url: str | None = None
    openai_api_key: SecretStr = SecretStr("")
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 4
    # A cost cap: a task text longer than this many characters (~4 per token) is never sent to the LLM;
    # it is "not annotated" with reason `too_long`. k-NN demonstrations share the same character budget.
    max_task_chars: int = Field(default=20_000, ge=1)
    llm_concurrency: int = 8
    llm_prices_file: Path | None = None
    llm_max_tokens: PositiveInt | None = 1024  # cap on a reply's tokens (None: the endpoint's own)
    llm_structured_output: bool = True  # ask for a json_schema response format (False: free text)
    llm_prompt_version: str | None = None  # prompt template ner.<version>; None: DEFAULT_TEMPLATE_VERSION
    # Where replies are cached and calls are ledgered; None: <LLMAAA_DATA_DIR>/llm-cache and .../costs.jsonl.
    # `llm-eval` and the LLM teacher set them to their own folders (llmaaa.llm_eval.llm_services).
    llm_cache_dir: Path | None = None
    llm_ledger_file: Path | None = None
    knn_k: int = 5
    labels_file: Path | None = None
    ner_domain: str | None = None

    # Label Studio, for k-NN demonstrations from human-verified tasks. When unset, the `hostname`
    # and `access_token` that Label Studio sends to /setup are used.
    label_studio_url: str | None = Field(
        default=None, validation_alias=AliasChoices("label_studio_url", "label_studio_host")
    )
    label_studio_api_key: SecretStr | None = None

    # Protection of the backend's own endpoints.
    basic_auth_user: str | None = None
    basic_auth_pass: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    webhook_secret_header: str = "X-Llmaaa-Secret"

    # /predict must answer inside Label Studio's ML_TIMEOUT_PREDICT (100 s by default): tasks the
    # LLM has not finished by this deadline get no prediction now and are retried next time.
    predict_deadline_s: float = 80.0
    # Head-of-line blocking: a /predict of at most INTERACTIVE_MAX_TASKS tasks (an annotator opening a
    # task) runs on its own small LLM lane, so a bulk request on the LLM_CONCURRENCY lane never delays it.
    interactive_max_tasks: int = 8
    llm_interactive_concurrency: int = 2
    # Larger /predict requests get a 413 that says to split them (bulk pre-annotation: `llmaaa acquire`).
    max_tasks_per_request: int = 1000
    # Projects kept in memory (least recently used evicted, threads released); state on disk is kept.
    max_projects: int = 64

    # Retraining on RQ. An empty REDIS_URL turns webhook-triggered retraining off (events are only recorded).
    redis_url: str = "redis://127.0.0.1:6379/0"
    min_new_annotations: int = 1  # annotation events before a retrain is queued (START_TRAINING always is)
    retrain_min_verified: int = 4
    retrain_holdout_fraction: float = 0.2  # verified tasks held out to compare the student with the LLM
    # Train on the verified tasks' human labels too, not only on LLM labels: each task a human verifies leaves
    # the LLM-labelled set, so without them the training set shrinks every round while the best labels go
    # unused (benchmarks/annotator_effort.py: student test F1 0.33 -> 0.02 over 4 rounds with False).
    retrain_include_verified: bool = True
    retrain_max_epochs: int = 10
    retrain_patience: int = 3
    retrain_reweight: bool = True
    retrain_mark_suspects: bool = True
    student_encoder: str | None = None  # a local HF checkpoint dir; default: the packaged MiniLM
    # MNLP: the best mean AUC over the effort grid's 120 runs (docs/acquisition.md, issue 15).
    acquisition_strategy: str = "mnlp"
    acquisition_batch: int = 50  # tasks queued per round after each retrain; 0 = no acquisition
    # Set: each round queues the tasks that fit in this many words to review, not acquisition_batch tasks.
    acquisition_budget_words: PositiveInt | None = None

    # Which model's spans /predict serves: `auto` switches to the student once its F1 on held-out
    # verified tasks beats the LLM's; `llm` and `student` force one.
    prediction_source: Literal["auto", "llm", "student"] = "auto"
    # `auto` switches only on a fair comparison: at least this many held-out verified tasks that neither
    # model trained, early-stopped or took demonstrations on (fewer: "not enough verified tasks to compare").
    compare_min_tasks: int = 20
    # The training recipe (training.trainer.RECIPES); empty = "recipe" when RETRAIN_REWEIGHT, else "plain".
    # Not plain L2RW: it cost 2.5-7.4 F1 under a ChatGPT-like teacher (docs/simulation-results.md) and
    # collapsed under a weak systematic one (F1 0.01 vs plain 0.13, benchmarks/recipe_sanity.py), where
    # "recipe" (warm-up, alpha-mix, uniform fallback, gold term) scored 0.40 and 0.46 vs plain 0.13 and 0.44.
    # One seed: the converged grid (docs/converged-grid.md) is what confirms or changes this.
    retrain_recipe_name: str = Field(default="", validation_alias=AliasChoices("retrain_recipe"))
    student_device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when available
    # Failed LLM calls are asked again in the background (backoff base·2^(n−1), capped), this many times.
    llm_retry_max_attempts: int = 6
    llm_retry_base_delay_s: float = 30.0
    llm_retry_interval_s: float = 15.0  # how often the retrier looks for due tasks; 0 = off

    @field_validator("acquisition_strategy")
    @classmethod
    def _known_strategy(cls, name: str) -> str:
        # At startup, not after a whole retrain: the round runs at the end of the job.
        from acquisition.strategies import STRATEGIES

        if name not in STRATEGIES:
            raise ValueError(f"unknown acquisition strategy {name!r}; valid: {', '.join(STRATEGIES)}")
        return name

    @property
    def retrain_recipe(self) -> str:
        return self.retrain_recipe_name or ("recipe" if self.retrain_reweight else "plain")

    def llm_api_key(self) -> str:
        # The openai client refuses an empty key; local servers (vLLM, Ollama) accept any.
        return self.openai_api_key.get_secret_value() or "not-needed"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
