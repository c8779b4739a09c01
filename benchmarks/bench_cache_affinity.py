"""Prompt-cache hit rate and bill: naive routing vs canonical prefixes with cache affinity.

Replays traffic from several apps whose system prompts and tools are logically stable but arrive
with varying whitespace, JSON key order and tool order, against a model served by several
deployments (simulated OpenAI-style providers whose prefix caches key on the exact bytes, as
real ones do). Two routers see the same requests in one run:

- naive: sends each request as the app built it to a deployment picked round-robin (what a
  gateway with simple load balancing does);
- ours: the real `Pipeline`: canonical prefix (stable bytes) and rendezvous affinity over the
  model's deployments.

Prints hit rates, the share of input tokens billed cached, and the bill of each, side by side.
Target: >= 60% hit rate for ours where naive stays <= 10%.

    .venv/bin/python -m benchmarks.bench_cache_affinity [--requests 1200]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router_service.auth import App, Authenticator
from router_service.catalog import Catalog
from router_service.chat import ChatMessage, ChatRequest, ToolSpec
from router_service.config import RouterConfig
from router_service.cost import Usage
from router_service.pipeline import Pipeline
from router_service.prefix import canonicalize
from router_service.providers.base import ProviderRequest, StreamEnd
from router_service.providers.simulated import SimulatedProvider
from router_service.tokens import measure_prompt

RESULTS = Path(__file__).parent / "results" / "bench_cache_affinity.json"
APPS = ("support", "code-review-bot", "fraud-summaries", "search")
# Prompt templates per app: each a distinct logical prefix to keep warm.
TEMPLATES = 6
DEPLOYMENTS = 4
FAST = {"kind": "simulated", "ttft_ms": 0, "tokens_per_second": 10_000_000, "answer_tokens": 40}


def config() -> RouterConfig:
    sims = {f"sim-{i}": FAST for i in range(DEPLOYMENTS)}
    prices = {"input": 0.95, "cached_input": 0.19, "cache_write": 0.95, "output": 1.40}
    frontier = {"input": 5.0, "cached_input": 0.5, "cache_write": 5.0, "output": 15.0}
    return RouterConfig.model_validate(
        {
            "providers": sims,
            "models": {
                "glm-5.2": {
                    "tier": "cheap",
                    "prices": prices,
                    "context_window": 200_000,
                    "capabilities": ["streaming", "tools"],
                    "deployments": [{"provider": name} for name in sims],
                },
                "gpt-5.5": {
                    "tier": "frontier",
                    "prices": frontier,
                    "context_window": 400_000,
                    "capabilities": ["streaming", "tools"],
                    "provider": "sim-0",
                },
            },
            "tasks": {"default": {"default_tier": "cheap"}},
            "apps": {
                name: {"key_sha256": hashlib.sha256(name.encode()).hexdigest()} for name in APPS
            },
        }
    )


@dataclass(frozen=True)
class AppPrompt:
    system: str
    tools: tuple[ToolSpec, ...]


def app_prompt(app: str, template: int, rng: random.Random) -> AppPrompt:
    rules = [
        f"{i + 1}. For {app} (template {template}), "
        f"follow policy section {rng.randrange(100, 999)}: "
        + " ".join(
            rng.choice(("check", "cite", "confirm", "escalate", "summarize", "verify"))
            + " the "
            + rng.choice(("account", "order", "diff", "ledger", "ticket"))
            for _ in range(6)
        )
        + "."
        for i in range(90)
    ]
    tools = tuple(
        ToolSpec(
            name=f"{app.replace('-', '_')}_{verb}",
            description=f"{verb.capitalize()} a record for {app}.",
            parameters={
                "type": "object",
                "properties": {
                    f"field_{k}": {"type": "string", "description": f"Field {k}."} for k in range(5)
                },
                "required": ["field_0"],
            },
        )
        for verb in ("lookup", "update", "escalate")
    )
    return AppPrompt("\n".join(rules), tools)


def shuffled(value: Any, rng: random.Random) -> Any:
    """The same JSON value with dictionary keys in a random order."""
    if isinstance(value, dict):
        keys = list(value)
        rng.shuffle(keys)
        return {k: shuffled(value[k], rng) for k in keys}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


def variant(prompt: AppPrompt, rng: random.Random) -> tuple[str, tuple[ToolSpec, ...]]:
    """The app's logical prefix, serialized as apps really do it: a bit differently each time."""
    lines = prompt.system.split("\n")
    style = rng.randrange(4)
    if style == 1:
        lines = [line + " " * rng.randrange(1, 3) for line in lines]
    system = ("\r\n" if style == 3 else "\n").join(lines)
    if style == 2:
        system = "\n\n" + system + "\t\n\n\n"
    tools = [
        ToolSpec(t.name, t.description, shuffled(dict(t.parameters), rng)) for t in prompt.tools
    ]
    rng.shuffle(tools)
    return system, tuple(tools)


def deployments(cfg: RouterConfig) -> list[SimulatedProvider]:
    return [SimulatedProvider(f"sim-{i}", cfg.providers[f"sim-{i}"]) for i in range(DEPLOYMENTS)]


async def call_directly(provider: SimulatedProvider, request: ChatRequest) -> Usage:
    end = None
    async for batch in provider.stream(
        ProviderRequest(
            model="glm-5.2",
            messages=request.messages,
            tools=request.tools,
            max_output_tokens=40,
            temperature=None,
            prompt_tokens=measure_prompt(request).estimate,
        )
    ):
        for event in batch:
            if isinstance(event, StreamEnd):
                end = event
    assert end is not None
    return end.usage


@dataclass
class Tally:
    requests: int = 0
    hits: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    bill_micro_usd: int = 0

    def add(self, usage: Usage, cost: int) -> None:
        self.requests += 1
        self.hits += usage.cached_input_tokens > 0
        self.input_tokens += usage.input_tokens
        self.cached_tokens += usage.cached_input_tokens
        self.bill_micro_usd += cost

    def report(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "prompt_cache_hit_rate": round(self.hits / self.requests, 4),
            "cached_input_token_share": round(self.cached_tokens / self.input_tokens, 4),
            "bill_usd": round(self.bill_micro_usd / 1e6, 6),
        }


async def run(requests: int, seed: int) -> dict[str, object]:
    cfg = config()
    catalog = Catalog(cfg.models)
    apps: dict[str, App] = {app.name: app for app in Authenticator(cfg, {}).apps}
    rng = random.Random(seed)
    prompts = {(name, t): app_prompt(name, t, rng) for name in APPS for t in range(TEMPLATES)}
    # Each router gets its own providers, so neither warms the other's caches.
    naive_providers = deployments(cfg)
    canonical_providers = deployments(cfg)
    ours = {name: SimulatedProvider(name, p) for name, p in cfg.providers.items()}
    pipeline = Pipeline(catalog=catalog, providers=ours, difficulty=None)
    glm = catalog["glm-5.2"]
    round_robin = itertools.cycle(range(DEPLOYMENTS))
    naive, canonical_only, affinity = Tally(), Tally(), Tally()
    for i in range(requests):
        name = rng.choice(APPS)
        system, tools = variant(prompts[(name, rng.randrange(TEMPLATES))], rng)
        request = ChatRequest(
            request_id=f"r{i}",
            task="default",
            messages=(
                ChatMessage("system", system),
                ChatMessage("user", f"Request {i}: please handle case {rng.randrange(10**6)}."),
            ),
            tools=tools,
            max_output_tokens=40,
        )
        # Naive: as sent, round-robin over the deployments; then the canonical prefix alone.
        deployment = next(round_robin)
        usage = await call_directly(naive_providers[deployment], request)
        naive.add(usage, glm.prices.cost_micro_usd(usage))
        usage = await call_directly(canonical_providers[deployment], canonicalize(request).request)
        canonical_only.add(usage, glm.prices.cost_micro_usd(usage))
        # Ours: the real pipeline.
        app = apps[name]
        call = await pipeline.start(app, await pipeline.plan(app, request))
        async for _ in call.stream():
            pass
        assert call.summary is not None
        affinity.add(call.summary.usage, call.summary.cost_micro_usd)
    naive_report, ours_report = naive.report(), affinity.report()
    canonical_report = canonical_only.report()
    return {
        "method": f"{requests} requests from {len(APPS)} apps (random interleaving, seed {seed}); "
        f"system prompts of ~{len(prompts[(APPS[0], 0)].system) // 4} tokens and 3 tools each, "
        f"varied in whitespace, JSON key order and tool order; {TEMPLATES} prompt templates "
        f"per app; one cheap model on {DEPLOYMENTS} simulated OpenAI-style deployments "
        "(prefix cache on exact bytes, "
        "1024-token minimum); naive = as sent, round-robin; canonical round-robin = canonical "
        "prefix, round-robin; ours = Pipeline (canonical prefix + rendezvous affinity)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "naive": naive_report,
        "canonical_round_robin": canonical_report,
        "canonical_affinity": ours_report,
        "bill_ratio_ours_over_naive": round(ours_report["bill_usd"] / naive_report["bill_usd"], 3),
        "meets_target": ours_report["prompt_cache_hit_rate"] >= 0.6
        and naive_report["prompt_cache_hit_rate"] <= 0.1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    result = asyncio.run(run(args.requests, args.seed))
    print(f"{'router':<22} {'hit rate':>9} {'cached share':>13} {'bill USD':>10}")
    for label, key in (
        ("naive round-robin", "naive"),
        ("canonical round-robin", "canonical_round_robin"),
        ("canonical + affinity", "canonical_affinity"),
    ):
        r = result[key]
        assert isinstance(r, dict)
        print(
            f"{label:<22} {r['prompt_cache_hit_rate']:>9.1%} "
            f"{r['cached_input_token_share']:>13.1%} {r['bill_usd']:>10.4f}"
        )
    print(
        f"bill ours / naive: {result['bill_ratio_ours_over_naive']}; target "
        f"(>= 60% vs <= 10%): {'met' if result['meets_target'] else 'NOT met'}"
    )
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
