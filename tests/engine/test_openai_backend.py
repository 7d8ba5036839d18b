"""The remote backend through the engine, against a real HTTP server on loopback that fails in every way a real
one does (tests/support/fake_openai.py). Each failure must reach the reader as one clear message, with what had
arrived kept, and leave the engine able to answer once the server is back."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest

from chat_engine.budget import ContextOverflowError
from chat_engine.engine import Engine
from chat_engine.params import GenerationParams
from chat_engine.slots import LineFullError
from common.errors import GenerationError, GenerationTimeout, ModelLoadError
from common.settings import Settings
from model_loader.registry import ModelSpec
from tests.support.fake_openai import ANSWER, CONTEXT, MODEL, closed_port, running_fake, unanswered_port

ASK = [{"role": "user", "content": "Who are you?"}]


def row(base_url: str, **fields) -> ModelSpec:
    return ModelSpec(id="remote", name="Remote", source="openai", backend="openai", base_url=base_url,
                     model=fields.pop("model", MODEL), **fields)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(cache_dir=tmp_path, models_file=tmp_path / "models.toml", connect_timeout_s=1.0,
                    stall_timeout_s=2.0, device="cpu")


@pytest.fixture
def fake():
    with running_fake() as server:
        yield server


@pytest.fixture
def engine(settings):
    engine = Engine(settings)
    yield engine
    engine.close()


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_the_answer_streams_in_pieces_with_the_servers_figures(engine, fake):
    status = engine.load(row(fake.base_url))
    assert status.state == "ready" and status.capabilities.weights_elsewhere and status.capabilities.exact_counts
    assert fake.base_url in status.info.device_summary and "context 1,024 (server)" in status.info.kernels
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=32))
    pieces = list(reply)
    assert "".join(pieces) == ANSWER and len(pieces) == len(ANSWER.split())
    result = reply.result
    assert result.finish_reason == "eos" and result.new_tokens == len(ANSWER.split())
    assert result.prompt_tokens == fake._count(ASK)  # the server's usage figures
    assert result.time_to_first_token_s is not None and result.tokens_per_s is not None
    budget = reply.budget
    assert not budget.estimated and budget.context == CONTEXT and budget.prompt_tokens == fake._count(ASK)


def test_every_parameter_is_sent_explicitly(engine, fake):
    engine.load(row(fake.base_url))
    engine.chat(ASK, GenerationParams(max_new_tokens=20)).text()
    greedy = fake.requests[-1]
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0 and greedy["max_tokens"] == 20
    assert greedy["top_k"] == -1 and greedy["repetition_penalty"] == 1.0 and "seed" not in greedy
    assert greedy["stream"] is True and greedy["stream_options"] == {"include_usage": True}
    engine.chat(ASK, GenerationParams(max_new_tokens=20, do_sample=True, temperature=0.7, top_p=0.9, top_k=20,
                                      repetition_penalty=1.1, seed=7)).text()
    sampled = fake.requests[-1]
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["repetition_penalty"],
            sampled["seed"]) == (0.7, 0.9, 20, 1.1, 7)


def test_stop_closes_the_stream_and_the_server_aborts_the_request(engine, fake):
    engine.load(row(fake.base_url))
    fake.mode = "slow"
    reply = engine.chat(ASK, GenerationParams(max_new_tokens=200))
    got = [next(reply) for _ in range(3)]
    assert fake.active == 1
    started = time.monotonic()
    reply.cancel()
    rest = "".join(reply)
    assert wait_until(lambda: fake.active == 0, 2.0), "the server still streams the stopped answer"
    assert time.monotonic() - started < 3.0 and fake.cancelled == 1
    assert reply.result.finish_reason == "stopped" and len(got) + len(rest.split()) < 20


def test_a_stalled_server_is_stopped_with_a_timeout_and_the_stop_button_does_not_wait_for_it(engine, fake, tmp_path):
    engine.load(row(fake.base_url))
    fake.mode = "stall"
    with pytest.raises(GenerationTimeout, match="sent nothing for 2 s"):
        engine.chat(ASK).text()
    patient = Engine(Settings(cache_dir=tmp_path, stall_timeout_s=30.0, device="cpu"))  # Stop, not the stall limit
    patient.load(row(fake.base_url))
    reply = patient.chat(ASK)
    threading.Timer(0.3, reply.cancel).start()
    started = time.monotonic()
    assert reply.text() == "" and time.monotonic() - started < 5.0
    assert reply.result.finish_reason == "stopped"
    patient.close()


def test_the_server_dying_mid_answer_keeps_what_arrived_and_the_next_answer_works(engine, fake):
    engine.load(row(fake.base_url))
    fake.mode = "die"
    reply = engine.chat(ASK)
    kept = []
    with pytest.raises(GenerationError, match="closed the connection in the middle of the answer"):
        for piece in reply:
            kept.append(piece)
    assert "".join(kept) == " ".join(ANSWER.split()[:3]) and reply.result.finish_reason == "error"
    fake.mode = "ok"
    assert engine.chat(ASK).text() == ANSWER


def test_an_error_event_in_the_stream_is_said_in_the_servers_words(engine, fake):
    engine.load(row(fake.base_url))
    fake.mode = "error_event"
    with pytest.raises(GenerationError, match="stopped the answer: Stopped: the model is being switched to X"):
        engine.chat(ASK).text()


@pytest.mark.parametrize(("address", "message"), [
    ("http://127.0.0.1:{closed}/v1", "Connection refused by"),
    ("http://no-such-host.invalid:8000/v1", "could not be resolved"),
    ("http://127.0.0.1:{unanswered}/v1", "did not accept a connection within 1 s"),
])
def test_an_unreachable_server_is_refused_at_connect_and_the_current_model_stays(engine, fake, address, message):
    engine.load(row(fake.base_url))
    with unanswered_port() as unanswered:
        url = address.format(closed=closed_port(), unanswered=unanswered)
        with pytest.raises(ModelLoadError, match=message):
            engine.load(replace(row(url), id="other"))
    assert engine.status().model_id == "remote" and engine.chat(ASK).text() == ANSWER


def test_the_server_going_away_between_answers_is_a_clear_error_then_recovers(engine, settings):
    with running_fake() as first:
        port = first.port
        engine.load(row(first.base_url))
    with pytest.raises(GenerationError, match="Connection refused by"):
        engine.chat(ASK).text()
    with running_fake() as again:
        if again.port != port:  # the same port is not always free again; the row points at the new one
            engine.load(row(again.base_url))
        assert engine.chat(ASK).text() == ANSWER


def test_a_wrong_or_missing_key_says_which_variable_to_set(settings, monkeypatch):
    with running_fake(api_key="right") as fake:
        engine = Engine(settings)
        monkeypatch.setenv("FAKE_KEY", "wrong")
        with pytest.raises(ModelLoadError, match=r"refused the API key \(401"):
            engine.load(row(fake.base_url, api_key_env="FAKE_KEY"))
        monkeypatch.delenv("FAKE_KEY")
        with pytest.raises(ModelLoadError, match="FAKE_KEY, which is not set"):
            engine.load(row(fake.base_url, api_key_env="FAKE_KEY"))
        monkeypatch.setenv("FAKE_KEY", "right")
        engine.load(row(fake.base_url, api_key_env="FAKE_KEY"))
        assert engine.chat(ASK).text() == ANSWER
        monkeypatch.setenv("FAKE_KEY", "rotated")  # the key is read at connect: a running backend keeps its own
        fake.api_key = "rotated-on-the-server"
        with pytest.raises(GenerationError, match="refused the API key"):
            engine.chat(ASK).text()
        engine.close()


def test_an_unknown_model_is_refused_naming_what_the_server_serves(engine, fake):
    with pytest.raises(ModelLoadError, match=f"does not serve 'nope'; it serves '{MODEL}'"):
        engine.load(row(fake.base_url, model="nope"))


@pytest.mark.parametrize(("mode", "message"), [
    ("detail400", r"does not serve the model 'fake-moe' \(Server is pinned"),  # transformers serve, pinned
    ("plain500", "answered 500: Internal Server Error"),  # transformers serve, unknown model
])
def test_server_refusals_in_their_own_shapes_become_clear_messages(engine, fake, mode, message):
    engine.load(row(fake.base_url))
    fake.mode = mode
    with pytest.raises(GenerationError, match=message):
        engine.chat(ASK).text()


def test_too_long_for_the_servers_context_is_refused_before_sending(engine, fake):
    engine.load(row(fake.base_url))
    sent = len(fake.requests)
    with pytest.raises(ContextOverflowError, match="1,024-token context"):
        engine.chat([{"role": "user", "content": "word " * 1100}])
    assert len(fake.requests) == sent


def test_a_context_only_the_server_knows_comes_back_as_its_refusal(engine, fake):
    engine.load(row(fake.base_url, context=100_000, server="openai"))
    fake.report_context = False
    with pytest.raises(GenerationError, match="too long for its context.*maximum context length is 1024"):
        engine.chat([{"role": "user", "content": "w " * 1100}], GenerationParams(max_new_tokens=16)).text()


def test_answers_do_not_wait_in_a_local_line_unless_the_row_sets_a_limit(engine, fake):
    engine.load(row(fake.base_url))
    fake.mode = "slow"
    first, second = engine.chat(ASK, GenerationParams(max_new_tokens=40)), engine.chat(ASK, GenerationParams(
        max_new_tokens=40))
    assert wait_until(lambda: fake.active == 2), "the server should get both at once: it batches"
    first.cancel(), second.cancel()
    first.text(), second.text()
    engine.load(row(fake.base_url, max_concurrent=1))
    first = engine.chat(ASK, GenerationParams(max_new_tokens=40), client="a")
    second = engine.chat(ASK, GenerationParams(max_new_tokens=40), client="b")
    assert wait_until(lambda: fake.active == 1) and second.queue_position == 1
    first.cancel()
    first.text()
    assert wait_until(lambda: fake.active == 1 and second.queue_position == 0)
    second.cancel()
    second.text()


def test_a_full_line_refuses_more_from_one_client(fake, tmp_path):
    engine = Engine(Settings(cache_dir=tmp_path, max_waiting_per_client=1, device="cpu"))
    engine.load(row(fake.base_url, max_concurrent=1))
    fake.mode = "slow"
    running = engine.chat(ASK, GenerationParams(max_new_tokens=40), client="a")
    waiting = engine.chat(ASK, GenerationParams(max_new_tokens=40), client="a")
    with pytest.raises(LineFullError):
        engine.chat(ASK, GenerationParams(max_new_tokens=40), client="a")
    engine.close()
    assert running.interruption and waiting.interruption


def test_without_tokenizer_or_tokenize_counts_are_estimated_and_said_so(engine, fake):
    fake.report_context = False
    status = engine.load(row(fake.base_url, server="openai"))
    assert "assumed" in status.info.kernels and any("estimated" in w for w in status.info.warnings)
    budget = engine.context_budget(ASK, 64)
    assert budget.estimated and budget.context == 2048


def test_a_row_tokenizer_gives_exact_counts_and_the_models_defaults(engine, fake):
    from tests.support.helpers import DEMO_DIR

    status = engine.load(row(fake.base_url, tokenizer=str(DEMO_DIR), server="openai"))
    assert not any("estimated" in w for w in status.info.warnings)
    budget = engine.context_budget(ASK, 64)
    assert not budget.estimated and budget.prompt_tokens == 23  # the demo's chat template, exactly
    assert engine.default_params().max_new_tokens == 256  # the demo's generation_config.json
    assert "<|im_start|>user\nWho are you?" in engine.render_prompt(ASK)
