"""`backend.composition.Services`: the LLM stack follows the settings it is given (issue 13)."""

from __future__ import annotations

from pathlib import Path

from backend.composition import Services
from backend.settings import Settings


def test_the_llm_stack_defaults_to_the_data_dir_and_the_default_prompt(tmp_path: Path) -> None:
    services = Services(Settings(llmaaa_data_dir=tmp_path / "data"))
    assert services.reply_cache().directory == tmp_path / "data" / "llm-cache"
    assert services.ledger().path == tmp_path / "data" / "costs.jsonl"
    assert services.template().template_id == "ner.v2"
    client = services.llm_client()
    assert client.max_tokens == 1024 and client.schema_supported is None  # json_schema is tried first


def test_an_evaluation_sets_its_own_cache_ledger_prompt_and_client(tmp_path: Path) -> None:
    settings = Settings(llmaaa_data_dir=tmp_path / "data", llm_cache_dir=tmp_path / "cache",
                        llm_ledger_file=tmp_path / "run" / "costs.jsonl", llm_prompt_version="v1",
                        llm_max_tokens=256, llm_structured_output=False, llm_model="m", llm_timeout_s=7)
    services = Services(settings)
    assert services.reply_cache().directory == tmp_path / "cache"
    assert services.ledger().path == tmp_path / "run" / "costs.jsonl"
    assert services.template().template_id == "ner.v1"
    client = services.llm_client()
    assert (client.model, client.timeout, client.max_tokens) == ("m", 7, 256)
    assert client.schema_supported is False  # free text: json_schema is never sent
    assert not (tmp_path / "data").exists()  # nothing written where the settings did not point
    # Built once: the annotator shares the services' client, cache and ledger.
    annotator = services.annotator(services.schema(
        '<View><Labels name="label" toName="text"><Label value="A"/></Labels><Text name="text" value="$text"/></View>'))
    assert annotator.client is client and annotator.cache is services.reply_cache()
    assert annotator.ledger is services.ledger()
