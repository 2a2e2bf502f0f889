"""The one module that talks to the Kubernetes API (everything else builds or decides).

Two thin layers working on plain dicts, with the same operations: create if absent, server-side apply,
merge patches of objects and of the status subresource, deletion by label.

- `Kube`: synchronous, over the official client's REST machinery (workload pods, scripts).
- `AsyncKube`: the operator's, on its event loop: one aiohttp session whose connection pool is sized for
  the concurrent reconciles. Per request it costs less than half the CPU of a call handed to a worker
  thread, which at a thousand resources is most of what the operator spends outside kopf.

Both load credentials the same way (kubeconfig, else the in-cluster service account) and raise the
official client's `ApiException` on a non-2xx answer.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from typing import Any, Optional, Union

import aiohttp
import kubernetes
from kubernetes.client.rest import ApiException

log = logging.getLogger("reasonops.kube")

FIELD_MANAGER = "reasonops"
# What a workload pod writes into its resource's status (progress, result) is owned under its own name,
# so managedFields tell the operator's writes from the pods'.
WORKLOAD_FIELD_MANAGER = "reasonops-workload"
_PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Job": "jobs",
    "Deployment": "deployments",
    "Event": "events",
    "NetworkPolicy": "networkpolicies",
    "ReasoningDataset": "reasoningdatasets",
    "FineTuneJob": "finetunejobs",
    "EvalRun": "evalruns",
    "Workload": "workloads",  # Kueue's
}
_API_VERSIONS = {"ConfigMap": "v1", "Service": "v1", "Pod": "v1", "Job": "batch/v1", "Deployment": "apps/v1", "Event": "v1",
                 "NetworkPolicy": "networking.k8s.io/v1"}


def load_configuration(kubeconfig: Optional[str] = None, pool_size: int = 32) -> kubernetes.client.Configuration:
    config = kubernetes.client.Configuration()
    if kubeconfig or not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
    else:
        kubernetes.config.load_incluster_config(client_configuration=config)
    config.connection_pool_maxsize = pool_size
    return config


def _path(api_version: str, kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{_PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _query(query: Optional[list[tuple[str, Any]]]) -> list[tuple[str, str]]:
    return [(k, str(v)) for k, v in query or []]


class Kube:
    """Plain-dict CRUD for the objects reasonops owns."""

    def __init__(self, kubeconfig: Optional[str] = None, pool_size: int = 32) -> None:
        self.api = kubernetes.client.ApiClient(load_configuration(kubeconfig, pool_size))

    def _call(
        self, method: str, path: str, body: Any = None, query: Optional[list[tuple[str, Any]]] = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        method, url, headers, body, post = self.api.param_serialize(
            method=method, resource_path=path, query_params=query or [], body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type}, auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=body, post_params=post, _request_timeout=30)
        data = response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response, body=data.decode(errors="replace") if data else None)
        return json.loads(data) if data else {}

    def create(self, obj: dict[str, Any]) -> bool:
        """Create the object unless it exists; True when it was created."""
        meta = obj["metadata"]
        try:
            self._call("POST", _path(obj["apiVersion"], obj["kind"], meta["namespace"]), obj,
                       query=[("fieldManager", FIELD_MANAGER)])
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the reasonops field manager."""
        meta = obj["metadata"]
        return self._call(
            "PATCH", _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]), obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")], content_type="application/apply-patch+yaml",
        )

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any], api_version: Optional[str] = None) -> dict:
        return self._call("PATCH", _path(api_version or _API_VERSIONS[kind], kind, namespace, name), patch,
                          content_type="application/merge-patch+json")

    def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self._call(
            "PATCH", _path("reasonops.io/v1alpha1", kind, namespace, name, "status"), {"status": status},
            query=[("fieldManager", WORKLOAD_FIELD_MANAGER)], content_type="application/merge-patch+json",
        )

    def delete_by_labels(self, kind: str, namespace: str, selector: str) -> None:
        """Delete every object of a kind matching the selector (background propagation: pods go too)."""
        self._call(
            "DELETE", _path(_API_VERSIONS[kind], kind, namespace),
            {"propagationPolicy": "Background"}, query=[("labelSelector", selector)],
        )

    def post_event(self, kind: str, namespace: str, name: str, reason: str, message: str, type_: str = "Warning") -> None:
        """A core Event about a reasonops resource (workload pods report problems this way)."""
        import datetime as dt
        import uuid

        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{name[:200]}.{uuid.uuid4().hex[:12]}", "namespace": namespace},
            "involvedObject": {"apiVersion": "reasonops.io/v1alpha1", "kind": kind, "name": name, "namespace": namespace},
            "reason": reason, "message": message[:1024], "type": type_,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "reasonops-workload"},
        }
        self._call("POST", _path("v1", "Event", namespace), event)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            self._call("DELETE", _path(_API_VERSIONS[kind], kind, namespace, name), {"propagationPolicy": "Background"})
        except ApiException as exc:
            if exc.status != 404:
                raise


class AsyncKube:
    """`Kube`'s operations as coroutines, for the operator's event loop (one session, pooled connections)."""

    def __init__(self, kubeconfig: Optional[str] = None, pool_size: int = 32) -> None:
        self.config = load_configuration(kubeconfig, pool_size)
        self.pool_size = pool_size
        self._session: Optional[aiohttp.ClientSession] = None  # opened on first use, inside the event loop

    def _ssl(self) -> Union[ssl.SSLContext, bool]:
        config = self.config
        if not config.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        return context

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=self.pool_size)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Any = None, query: Optional[list[tuple[str, Any]]] = None,
        content_type: str = "application/json", decode: bool = True,
    ) -> dict[str, Any]:
        """One request; the answer's JSON, unless `decode` is false (then {}: callers that need no answer)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        # Read per request: the client's refresh hook renews a rotated service-account token.
        auth = self.config.auth_settings().get("BearerToken")
        if auth and auth["value"]:
            headers[auth["key"]] = auth["value"]
        async with self._open().request(
            method, self.config.host + path, params=_query(query), headers=headers,
            data=json.dumps(body) if body is not None else None, proxy=self.config.proxy or None,
            server_hostname=self.config.tls_server_name or None,
        ) as response:
            data = await response.read()
            if not 200 <= response.status < 300:
                exc = ApiException(status=response.status, reason=response.reason)
                exc.body = data.decode(errors="replace") if data else None
                raise exc
        return json.loads(data) if data and decode else {}

    async def create(self, obj: dict[str, Any]) -> bool:
        """Create the object unless it exists; True when it was created."""
        meta = obj["metadata"]
        try:
            await self._call("POST", _path(obj["apiVersion"], obj["kind"], meta["namespace"]), obj,
                             query=[("fieldManager", FIELD_MANAGER)], decode=False)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply under the reasonops field manager."""
        meta = obj["metadata"]
        return await self._call(
            "PATCH", _path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"]), obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")], content_type="application/apply-patch+yaml",
        )

    async def patch(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any], api_version: Optional[str] = None
    ) -> dict[str, Any]:
        return await self._call("PATCH", _path(api_version or _API_VERSIONS[kind], kind, namespace, name), patch,
                                content_type="application/merge-patch+json")

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Merge-patch the status subresource; returns the object as it now is."""
        return await self._call(
            "PATCH", _path("reasonops.io/v1alpha1", kind, namespace, name, "status"), {"status": status},
            content_type="application/merge-patch+json",
        )

    async def delete_by_labels(self, kind: str, namespace: str, selector: str) -> None:
        """Delete every object of a kind matching the selector (background propagation: pods go too)."""
        await self._call(
            "DELETE", _path(_API_VERSIONS[kind], kind, namespace),
            {"propagationPolicy": "Background"}, query=[("labelSelector", selector)], decode=False,
        )

    async def list_events(self, namespace: str, field_selector: str) -> list[dict[str, Any]]:
        """Core Events of a namespace matching a field selector (e.g. involvedObject.uid=...)."""
        answer = await self._call("GET", _path("v1", "Event", namespace), query=[("fieldSelector", field_selector)])
        return list(answer.get("items") or [])

    async def evict(self, namespace: str, name: str) -> None:
        """Remove a pod through the Eviction API: it gets the DisruptionTarget condition, which a Job's pod
        failure policy can ignore (a plain delete counts against backoffLimit). Gone already is fine."""
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
        try:
            await self._call("POST", _path("v1", "Pod", namespace, name, "eviction"), body, decode=False)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", _path(_API_VERSIONS[kind], kind, namespace, name), {"propagationPolicy": "Background"},
                             decode=False)
        except ApiException as exc:
            if exc.status != 404:
                raise
