"""The shipped classifier in the service: scores in decisions, Admin reload, a watched
artifact directory, and refusal of bad artifacts while the old one keeps serving."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import grpc
import pytest
from grpc import aio

from classifier.scorer import DEFAULT_ARTIFACT, load_scorer
from router_service._proto import router_pb2 as pb
from router_service.classification import ClassifierRuntime
from router_service.config import ClassifierConfig
from router_service.errors import ArtifactRejected
from tests.component.test_route_api import route_request
from tests.support.configs import ADMIN_KEY, DEMO_KEY, fast_config
from tests.support.servers import Running, auth, running_router

SHIPPED = load_scorer(DEFAULT_ARTIFACT)


def artifact_copy(target: Path, **metadata_changes: object) -> Path:
    shutil.copytree(DEFAULT_ARTIFACT, target)
    if metadata_changes:
        path = target / "metadata.json"
        metadata = json.loads(path.read_text())
        metadata.update(metadata_changes)
        path.write_text(json.dumps(metadata))
    return target


async def reload(running: Running, path: str = "") -> pb.ReloadClassifierResponse:
    """Admin.ReloadClassifier with the admin key (`path` empty: the configured artifact)."""
    request = pb.ReloadClassifierRequest(path=path)
    return await running.admin.ReloadClassifier(request, metadata=auth(ADMIN_KEY))


async def classifier_version(running: Running) -> str:
    reply = await running.admin.GetClassifier(pb.GetClassifierRequest(), metadata=auth(ADMIN_KEY))
    return reply.classifier.version


async def test_decisions_carry_the_score_threshold_and_version() -> None:
    async with running_router(fast_config(classifier={"enabled": True})) as running:
        hard = route_request(
            task="code_review",
            messages=[
                pb.Message(
                    role="user",
                    content="Prove that the following concurrent queue is linearizable, then "
                    "find the race in its dequeue under the C11 memory model:\n"
                    + "struct node { _Atomic(struct node*) next; int v; };\n"
                    * 20,
                )
            ],
        )
        decision = await running.router.Explain(hard, metadata=auth(DEMO_KEY))
        version = await classifier_version(running)
    assert decision.classifier_version == SHIPPED.version == version
    assert 0.0 < decision.difficulty < 1.0
    assert decision.threshold == pytest.approx(SHIPPED.metadata.thresholds["strong_share_50"])
    assert any(r.startswith("difficulty ") and "(strong_share_50)" in r for r in decision.reasons)
    expected = pb.TIER_FRONTIER if decision.difficulty >= decision.threshold else pb.TIER_CHEAP
    assert decision.tier == expected


async def test_admin_reload_refuses_a_bad_artifact_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    broken = artifact_copy(tmp_path / "broken")
    (broken / "model.onnx").write_bytes(b"not a model")
    other = artifact_copy(tmp_path / "other", version="retrained-2", recommended_threshold=0.3)
    async with running_router(fast_config(classifier={"enabled": True})) as running:
        with pytest.raises(aio.AioRpcError) as caught:
            await reload(running, str(broken))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "the previous one keeps serving" in (caught.value.details() or "")
        assert await classifier_version(running) == SHIPPED.version
        decision = await running.router.Explain(route_request(), metadata=auth(DEMO_KEY))
        assert decision.classifier_version == SHIPPED.version

        reply = await reload(running, str(other))
        assert reply.classifier.version == "retrained-2"
        assert reply.classifier.recommended_threshold == 0.3
        decision = await running.router.Explain(route_request(), metadata=auth(DEMO_KEY))
        assert decision.classifier_version == "retrained-2"
        with pytest.raises(aio.AioRpcError) as caught:
            await running.admin.ReloadClassifier(
                pb.ReloadClassifierRequest(), metadata=auth(DEMO_KEY)
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Paths that are no paths are refused cleanly, and the error stays small.
        for path, code in (
            ("nul\x00byte", grpc.StatusCode.INVALID_ARGUMENT),
            ("p" * 20_000, grpc.StatusCode.INVALID_ARGUMENT),
            (str(tmp_path / ("x" * 300)), grpc.StatusCode.FAILED_PRECONDITION),
        ):
            with pytest.raises(aio.AioRpcError) as caught:
                await reload(running, path)
            assert caught.value.code() == code
            assert len(caught.value.details() or "") < 1000
        assert await classifier_version(running) == "retrained-2"


async def test_a_watched_symlink_swap_loads_without_a_restart(tmp_path: Path) -> None:
    artifact_copy(tmp_path / "v1")
    artifact_copy(tmp_path / "v2", version="retrained-2")
    artifact_copy(tmp_path / "v3", feature_spec="charhash-v0:gone")
    current = tmp_path / "current"
    current.symlink_to("v1")
    config = fast_config(
        classifier={"enabled": True, "artifact": str(current), "watch_interval_s": 0.05}
    )

    async def swap(target: str) -> None:
        staging = tmp_path / "staging"
        staging.symlink_to(target)
        staging.replace(current)
        await asyncio.sleep(0.5)

    async with running_router(config) as running:
        assert await classifier_version(running) == SHIPPED.version
        await swap("v2")
        assert await classifier_version(running) == "retrained-2"
        # An artifact built for other features is refused; v2 keeps serving.
        await swap("v3")
        assert await classifier_version(running) == "retrained-2"


async def test_a_bad_configured_artifact_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(Exception, match="nowhere"):
        async with running_router(
            fast_config(classifier={"enabled": True, "artifact": str(missing)})
        ):
            pass


def test_named_thresholds_must_exist_in_the_artifact() -> None:
    runtime = ClassifierRuntime(
        ClassifierConfig(artifact=DEFAULT_ARTIFACT), required_thresholds={"quality_42"}
    )
    with pytest.raises(ArtifactRejected, match="quality_42"):
        runtime.load_initial()


async def test_reload_without_a_path_goes_back_to_the_configured_artifact(tmp_path: Path) -> None:
    other = artifact_copy(tmp_path / "other", version="retrained-2")
    async with running_router(fast_config(classifier={"enabled": True})) as running:
        await reload(running, str(other))
        assert await classifier_version(running) == "retrained-2"
        reply = await reload(running)
    assert reply.classifier.version == SHIPPED.version
    assert Path(reply.classifier.path) == DEFAULT_ARTIFACT


async def test_the_watcher_follows_a_reloaded_path_and_survives_bad_reads(tmp_path: Path) -> None:
    other = artifact_copy(tmp_path / "other", version="retrained-2")
    config = fast_config(classifier={"enabled": True, "watch_interval_s": 0.05})
    async with running_router(config) as running:
        await reload(running, str(other))
        # A retrain writes into the reloaded directory: the watcher loads it from there, and
        # does not fall back to the configured artifact.
        metadata = json.loads((other / "metadata.json").read_text())
        (other / "metadata.json").write_text(json.dumps(metadata | {"version": "retrained-3"}))
        await asyncio.sleep(0.4)
        assert await classifier_version(running) == "retrained-3"
        # The model file vanishes for a moment (a swap in progress): refused, still serving.
        (other / "model.onnx").rename(other / "model.onnx.moving")
        (other / "metadata.json").write_text(json.dumps(metadata | {"version": "retrained-4"}))
        await asyncio.sleep(0.4)
        assert await classifier_version(running) == "retrained-3"
        (other / "model.onnx.moving").rename(other / "model.onnx")
        (other / "metadata.json").write_text(json.dumps(metadata | {"version": "retrained-5"}))
        await asyncio.sleep(0.4)
        assert await classifier_version(running) == "retrained-5"


async def test_a_configured_model_pair_refuses_other_pairs(tmp_path: Path) -> None:
    other = artifact_copy(tmp_path / "other", weak_model="glm-5.2", strong_model="gpt-5.5")
    config = fast_config(
        classifier={"enabled": True, "model_pair": [SHIPPED.weak_model, SHIPPED.strong_model]}
    )
    async with running_router(config) as running:
        with pytest.raises(aio.AioRpcError) as caught:
            await reload(running, str(other))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "model_pair" in (caught.value.details() or "")
        assert await classifier_version(running) == SHIPPED.version


async def test_reloads_are_confined_to_the_reload_root(tmp_path: Path) -> None:
    root = tmp_path / "models"
    inside = artifact_copy(root / "v2", version="retrained-2")
    outside = artifact_copy(tmp_path / "elsewhere", version="planted")
    (root / "sneaky").symlink_to(outside)
    config = fast_config(classifier={"enabled": True, "reload_root": str(root)})
    async with running_router(config) as running:
        for path in (outside, root / "sneaky", root / ".." / "elsewhere"):
            with pytest.raises(aio.AioRpcError) as caught:
                await reload(running, str(path))
            assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "reload_root" in (caught.value.details() or "")
        assert await classifier_version(running) == SHIPPED.version
        reply = await reload(running, str(inside))
        assert reply.classifier.version == "retrained-2"
        # The configured artifact (here the shipped one, outside the root) stays reachable.
        reply = await reload(running)
        assert reply.classifier.version == SHIPPED.version
