"""Models with the `reasoning` capability (OpenAI's o-series and GPT-5 refuse any temperature
but their default, and count their thinking against the output limit): the router leaves the
caller's temperature out of their requests, and a reasoning judge gets room to think."""

from __future__ import annotations

from pathlib import Path

from router_service._proto import router_pb2 as pb
from router_service.shadow.judge import (
    JUDGE_MAX_OUTPUT_TOKENS,
    REASONING_JUDGE_MAX_OUTPUT_TOKENS,
    judge_request,
)
from tests.support.configs import DEMO_KEY
from tests.support.fake_provider import FakeProvider
from tests.support.provider_configs import environ, mixed_config
from tests.support.servers import auth, running_router


def request(model: str) -> pb.RouteRequest:
    return pb.RouteRequest(
        task="summarization",
        messages=[pb.Message(role="user", content="Summarize: the database failed over.")],
        max_output_tokens=50,
        temperature=0.0,
        hints=pb.RouteHints(force_model=model),
    )


async def test_a_reasoning_model_gets_no_temperature_and_others_keep_theirs(
    tmp_path: Path,
) -> None:
    config = mixed_config(
        models={"gpt-5.5": {"capabilities": ["streaming", "tools", "reasoning"]}},
        call_log={"directory": str(tmp_path)},
    )
    fake = FakeProvider()
    async with fake, running_router(config, environ=environ(fake.url)) as running:
        for model in ("gpt-5.5", "glm-5.2"):
            events = [
                e async for e in running.router.Route(request(model), metadata=auth(DEMO_KEY))
            ]
            assert events[-1].HasField("done")
    [reasoning] = fake.requests_for("gpt-5.5")
    [plain] = fake.requests_for("glm-5.2")
    assert "temperature" not in reasoning.body
    assert plain.body["temperature"] == 0.0


def test_a_reasoning_judge_gets_room_to_think() -> None:
    plain = judge_request("r", [], "a", "b", judge_model="m")
    thinking = judge_request("r", [], "a", "b", judge_model="m", reasoning=True)
    assert plain.max_output_tokens == JUDGE_MAX_OUTPUT_TOKENS
    assert thinking.max_output_tokens == REASONING_JUDGE_MAX_OUTPUT_TOKENS
