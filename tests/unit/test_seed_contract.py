"""The seed plan's five test blocks, kept as a contract.

Copied from ../shared/seed/000_becbea3303e8d9b4.txt with `from src.launcher.<module>
import X` read as `from healthmon import X`. One change, in the step-2 success test:
under httpx 0.28 `Mock(spec=httpx.Response)` has no `headers` (httpx sets it per
instance), so the mock is given its headers here rather than contorting the probe.
"""

import asyncio
import time
from unittest.mock import Mock, patch

import httpx
import pytest

from healthmon import (
    AgentsAdapter,
    HealthCheckResult,
    HealthMonitor,
    HealthStatus,
    ServiceDefinition,
)


# Step 1
@pytest.mark.asyncio
async def test_health_check_result_creation():
    """测试健康检查结果模型创建"""
    service_name = "api-gateway"
    status = HealthStatus.HEALTHY
    response_time = 25.5
    timestamp = time.time()

    result = HealthCheckResult(
        service_name=service_name,
        status=status,
        response_time_ms=response_time,
        timestamp=timestamp,
        details={"version": "1.0.0", "uptime": 3600},
    )

    assert result.service_name == service_name
    assert result.status == HealthStatus.HEALTHY
    assert result.response_time_ms == 25.5
    assert result.details["version"] == "1.0.0"
    assert result.error is None


# Step 2
@pytest.mark.asyncio
async def test_http_health_check_success():
    monitor = HealthMonitor(check_interval=1.0)

    with patch("httpx.AsyncClient.get") as mock_get:
        mock_response = Mock(spec=httpx.Response)
        mock_response.status_code = 200
        mock_response.headers = httpx.Headers({"content-type": "application/json"})
        mock_response.json.return_value = {"status": "ok"}
        mock_get.return_value = mock_response

        result = await monitor._check_http_health("api-gateway", "http://localhost:8000/health")

        assert result.status == HealthStatus.HEALTHY
        # 允许一定误差
        assert result.response_time_ms == pytest.approx(25.0, abs=50.0)
        assert result.service_name == "api-gateway"


@pytest.mark.asyncio
async def test_http_health_check_timeout():
    monitor = HealthMonitor(check_interval=1.0)

    with patch("httpx.AsyncClient.get") as mock_get:
        mock_get.side_effect = httpx.TimeoutException("Request timeout")

        result = await monitor._check_http_health(
            "api-gateway", "http://localhost:8000/health", timeout=1.0
        )

        assert result.status == HealthStatus.UNHEALTHY
        assert "timeout" in result.error.lower()


# Step 3
@pytest.mark.asyncio
async def test_health_subscription_notification():
    monitor = HealthMonitor()
    notifications: list[HealthCheckResult] = []

    async def callback(result: HealthCheckResult) -> None:
        notifications.append(result)

    monitor.subscribe(callback)

    result1 = HealthCheckResult(
        service_name="api",
        status=HealthStatus.HEALTHY,
        response_time_ms=10,
        timestamp=time.time(),
    )

    result2 = HealthCheckResult(
        service_name="api",
        status=HealthStatus.UNHEALTHY,
        response_time_ms=5000,
        timestamp=time.time(),
    )

    await monitor._notify_subscribers(result1, None)
    await monitor._notify_subscribers(result2, result1)

    assert len(notifications) == 2
    assert notifications[0].status == HealthStatus.HEALTHY
    assert notifications[1].status == HealthStatus.UNHEALTHY


# Step 4
@pytest.mark.asyncio
async def test_monitoring_loop():
    monitor = HealthMonitor(check_interval=0.1)  # 100ms for test

    monitor.add_service(
        ServiceDefinition(
            name="api",
            service_type="fastapi",
            module_path="api.main",
            dependencies=[],
            health_check_url="http://localhost:8000/health",
        )
    )

    with patch.object(monitor, "_check_http_health") as mock_check:
        mock_check.return_value = HealthCheckResult(
            service_name="api",
            status=HealthStatus.HEALTHY,
            response_time_ms=10,
            timestamp=time.time(),
        )

        await monitor.start_monitoring()
        await asyncio.sleep(0.35)  # 等待 ~3 个检查周期
        await monitor.stop_monitoring()

        assert mock_check.call_count >= 3


@pytest.mark.asyncio
async def test_cluster_health_aggregation():
    monitor = HealthMonitor()

    monitor.health_cache = {
        "api": HealthCheckResult(
            service_name="api",
            status=HealthStatus.HEALTHY,
            response_time_ms=10,
            timestamp=time.time(),
        ),
        "agent1": HealthCheckResult(
            service_name="agent1",
            status=HealthStatus.DEGRADED,
            response_time_ms=100,
            timestamp=time.time(),
        ),
    }

    cluster_health = monitor.get_cluster_health()
    cluster_status = monitor.get_cluster_status()

    assert len(cluster_health) == 2
    assert cluster_health["api"].status == HealthStatus.HEALTHY
    assert cluster_health["agent1"].status == HealthStatus.DEGRADED
    assert cluster_status == HealthStatus.DEGRADED  # 最差状态


# Step 5
@pytest.mark.asyncio
async def test_agent_health_integration():
    monitor = HealthMonitor()
    agents_adapter = Mock(spec=AgentsAdapter)

    agents_adapter.get_agent_statuses.return_value = {
        "worldsmith": {"status": "running", "health": "healthy"},
        "plotmaster": {"status": "running", "health": "degraded"},
    }

    await monitor.check_agents_health(agents_adapter)
    cluster_health = monitor.get_cluster_health()

    assert "agent:worldsmith" in cluster_health
    assert cluster_health["agent:worldsmith"].status == HealthStatus.HEALTHY
    assert cluster_health["agent:plotmaster"].status == HealthStatus.DEGRADED
