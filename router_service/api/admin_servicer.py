"""The `router.v1.Admin` service: budgets, catalog, classifier and statistics; admin keys only."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from router_service._proto import router_pb2 as pb
from router_service.accounting import Accounting
from router_service.api.convert import tier_message
from router_service.api.status import abort
from router_service.api.validation import shown
from router_service.auth import App, Authenticator
from router_service.breaker import CircuitBreaker
from router_service.budgets import BudgetSnapshot
from router_service.catalog import Catalog
from router_service.classification import ClassifierRuntime
from router_service.cost import micro_to_usd
from router_service.errors import ArtifactRejected, InvalidRequest, NotFound, RouterError
from router_service.shadow import SHADOW_SUFFIX, shadow_app
from router_service.stats import AppStats
from router_service.store.base import DEFAULT_SOFT_THRESHOLD

__all__ = ["AdminServicer"]

Context = aio.ServicerContext[object, object]

# Limits up to this stay exact in micro-dollars inside Redis scripts (doubles: 2**53).
_MAX_MONTHLY_LIMIT_USD = 1_000_000_000
# ReloadClassifier's path: PATH_MAX, so that errors quoting it stay small.
_MAX_PATH = 4096


def budget_message(snapshot: BudgetSnapshot) -> pb.GetBudgetResponse:
    usage = snapshot.usage
    limit = usage.limit.limit_micro_usd
    return pb.GetBudgetResponse(
        app_id=snapshot.app,
        monthly_limit_usd=micro_to_usd(limit or 0),
        spent_usd=micro_to_usd(usage.spent_micro_usd),
        reserved_usd=micro_to_usd(usage.reserved_micro_usd),
        period=snapshot.period,
        soft_threshold=usage.limit.soft_threshold,
        state=snapshot.state.value,
        has_limit=limit is not None,
    )


def stats_message(stats: AppStats, budget: BudgetSnapshot | None) -> pb.AppStats:
    return pb.AppStats(
        app_id=stats.app,
        requests=stats.requests,
        spent_usd=micro_to_usd(stats.spent_micro_usd),
        requests_by_tier=stats.requests_by_tier,
        requests_by_model=stats.requests_by_model,
        prompt_cache_hit_rate=stats.prompt_cache_hit_rate,
        cached_input_token_share=stats.cached_input_token_share,
        response_cache_hit_rate=stats.response_cache_hit_rate,
        spent_usd_by_task={
            task: micro_to_usd(micro) for task, micro in stats.spent_micro_usd_by_task.items()
        },
        budget=None if budget is None else budget_message(budget),
        refused=stats.refused,
        invalid=stats.invalid,
    )


class AdminServicer:
    def __init__(
        self,
        auth: Authenticator,
        catalog: Catalog,
        *,
        accounting: Accounting | None = None,
        breaker: CircuitBreaker | None = None,
        classifier: ClassifierRuntime | None = None,
        shadow_budget_share: Decimal = Decimal("0.1"),
    ) -> None:
        self._auth = auth
        self._catalog = catalog
        self._accounting = accounting or Accounting.in_memory()
        self._apps = {app.name: app for app in auth.apps}
        self._breaker = breaker
        self._classifier = classifier
        self._shadow_share = shadow_budget_share

    def _app(self, app_id: str) -> App:
        if not app_id:
            raise InvalidRequest("app_id is empty: name an app from the configuration")
        app = self._apps.get(app_id)
        if app is None and app_id.endswith(SHADOW_SUFFIX):
            # Shadow grading's own budget: `<app>:shadow`.
            base = self._apps.get(app_id.removesuffix(SHADOW_SUFFIX))
            if base is not None:
                return shadow_app(base, self._shadow_share)
        if app is None:
            raise NotFound(f"unknown app {shown(app_id)}")
        return app

    async def _follow_with_shadow(self, app: App, limit: Decimal | None, soft: float) -> None:
        """An app's shadow budget (`<app>:shadow`) is its share of the app's limit: a limit set
        (or cleared) here moves it too, so grading never outgrows the app's budget. Setting
        `<app>:shadow` itself afterwards overrides it."""
        if app.name.endswith(SHADOW_SUFFIX):
            return
        shadow = shadow_app(app, self._shadow_share)
        share = None if limit is None else limit * self._shadow_share
        await self._accounting.budgets.set_limit(shadow.name, shadow.config, share, soft)

    async def ListModels(
        self, request: pb.ListModelsRequest | None, context: Context
    ) -> pb.ListModelsResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            unhealthy = self._breaker.unhealthy(self._catalog) if self._breaker else frozenset()
            return pb.ListModelsResponse(
                models=[
                    pb.ModelInfo(
                        name=m.name,
                        provider=",".join(d.provider for d in m.deployments),
                        tier=tier_message(m.tier),
                        input_usd_per_mtok=micro_to_usd(m.prices.input),
                        cached_input_usd_per_mtok=micro_to_usd(m.prices.cached_input),
                        cache_write_usd_per_mtok=micro_to_usd(m.prices.cache_write),
                        output_usd_per_mtok=micro_to_usd(m.prices.output),
                        context_window=m.context_window,
                        capabilities=sorted(m.capabilities),
                        # Healthy while any deployment's circuit breaker lets calls through.
                        healthy=m.name not in unhealthy,
                    )
                    for m in self._catalog
                ]
            )
        except RouterError as exc:
            await abort(context, exc)

    async def SetBudget(
        self, request: pb.SetBudgetRequest | None, context: Context
    ) -> pb.SetBudgetResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            app = self._app(request.app_id)
            if request.clear:
                if request.monthly_limit_usd or request.soft_threshold:
                    raise InvalidRequest(
                        "clear drops the limit set here: give no monthly_limit_usd or "
                        "soft_threshold with it"
                    )
                snapshot = await self._accounting.budgets.set_limit(
                    app.name, app.config, None, DEFAULT_SOFT_THRESHOLD
                )
                await self._follow_with_shadow(app, None, DEFAULT_SOFT_THRESHOLD)
                return pb.SetBudgetResponse(budget=budget_message(snapshot))
            limit = request.monthly_limit_usd
            if not (math.isfinite(limit) and 0 <= limit <= _MAX_MONTHLY_LIMIT_USD):
                raise InvalidRequest(
                    f"monthly_limit_usd is {limit}; it must be between 0 and "
                    f"{_MAX_MONTHLY_LIMIT_USD:,}"
                )
            soft = request.soft_threshold or DEFAULT_SOFT_THRESHOLD
            if not (math.isfinite(soft) and 0 < soft <= 1):
                raise InvalidRequest(
                    f"soft_threshold is {soft}; it must be in (0, 1] (0 means the default 0.8)"
                )
            snapshot = await self._accounting.budgets.set_limit(
                app.name, app.config, Decimal(repr(limit)), soft
            )
            await self._follow_with_shadow(app, Decimal(repr(limit)), soft)
            return pb.SetBudgetResponse(budget=budget_message(snapshot))
        except RouterError as exc:
            await abort(context, exc)

    async def GetBudget(
        self, request: pb.GetBudgetRequest | None, context: Context
    ) -> pb.GetBudgetResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            app = self._app(request.app_id)
            return budget_message(await self._accounting.budgets.read(app.name, app.config))
        except RouterError as exc:
            await abort(context, exc)

    async def GetStats(
        self, request: pb.GetStatsRequest | None, context: Context
    ) -> pb.GetStatsResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            apps = [self._app(request.app_id)] if request.app_id else list(self._apps.values())
            apps.sort(key=lambda a: a.name)
            accounting = self._accounting
            each, overall = await accounting.stats.read_many([app.name for app in apps])
            return pb.GetStatsResponse(
                apps=[
                    stats_message(stats, await accounting.budgets.read(app.name, app.config))
                    for stats, app in zip(each, apps, strict=True)
                ],
                overall=stats_message(overall, None),
            )
        except RouterError as exc:
            await abort(context, exc)

    def _classifier_info(self) -> pb.ClassifierInfo:
        runtime = self._classifier
        if runtime is None:
            raise ArtifactRejected("the classifier is disabled (classifier.enabled: false)")
        active = runtime.active
        if active is None:
            raise ArtifactRejected("no classifier artifact is loaded")
        scorer = active.scorer
        loaded_at = Timestamp()
        loaded_at.FromNanoseconds(int(active.loaded_at * 1e9))
        return pb.ClassifierInfo(
            version=scorer.version,
            path=str(runtime.path),
            weak_model=scorer.weak_model,
            strong_model=scorer.strong_model,
            recommended_threshold=scorer.recommended_threshold,
            loaded_at=loaded_at,
            feature_spec=scorer.feature_spec,
        )

    async def GetClassifier(
        self, request: pb.GetClassifierRequest | None, context: Context
    ) -> pb.GetClassifierResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            return pb.GetClassifierResponse(classifier=self._classifier_info())
        except RouterError as exc:
            await abort(context, exc)

    async def ReloadClassifier(
        self, request: pb.ReloadClassifierRequest | None, context: Context
    ) -> pb.ReloadClassifierResponse:
        try:
            self._auth.admin(context.invocation_metadata())
            if request is None:
                raise InvalidRequest("malformed request")
            if self._classifier is None:
                raise ArtifactRejected("the classifier is disabled (classifier.enabled: false)")
            path = request.path
            if len(path) > _MAX_PATH or "\x00" in path:
                raise InvalidRequest(
                    f"path must be a file system path of at most {_MAX_PATH} characters"
                )
            await self._classifier.reload(Path(path) if path else None)
            return pb.ReloadClassifierResponse(classifier=self._classifier_info())
        except RouterError as exc:
            await abort(context, exc)
