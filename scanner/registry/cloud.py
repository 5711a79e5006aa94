"""Cloud registries reached with the workload's own identity, as the kubelet's credential providers do.

- ``ecr``: Amazon ECR (``<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]``, the dual-stack
  ``dkr-ecr`` hosts, ECR Public ``public.ecr.aws``): ``GetAuthorizationToken`` through boto3's default
  credential chain (IRSA web identity, EKS Pod Identity, instance profile; ``AWS_ENDPOINT_URL`` is
  honoured), user ``AWS``. Extra ``sigaudit[aws]``.
- ``gcr``: Artifact Registry (``*-docker.pkg.dev``) and GCR (``gcr.io``, ``*.gcr.io``): an OAuth2 access
  token from Application Default Credentials (workload identity, the metadata server) through
  google-auth, user ``oauth2accesstoken``. Extra ``sigaudit[gcp]``.
- ``acr``: Azure Container Registry (``*.azurecr.io`` and the sovereign clouds): an Entra ID token from
  azure-identity's default chain (workload identity, managed identity), exchanged at
  ``https://<registry>/oauth2/exchange`` for an ACR refresh token used as the password of the null
  GUID user. Extra ``sigaudit[azure]``.

Every call is bounded in time; a failure is a CredentialUnavailable naming the provider (never a
token). Host matching is anchored: a host merely containing a cloud's name matches nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

from scanner.redact import quiet_sdk_loggers
from scanner.registry.auth import Credential, CredentialUnavailable, DeferredCredential, Resolved, Resolver

# After amazon-ecr-credential-helper's ecrPattern (ecr-login/api/client.go).
ECR_HOST = re.compile(
    r"(?P<account>[0-9]{12})\.dkr[.-]ecr(?P<fips>-fips)?\.(?P<region>[a-z0-9][a-z0-9-]*)\."
    r"(?:amazonaws\.com(?:\.cn)?|on\.aws|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)"
)
ECR_PUBLIC = "public.ecr.aws"
GCR_HOST = re.compile(r"(?:[a-z0-9-]+\.)?gcr\.io|[a-z0-9-]+-docker\.pkg\.dev")
ACR_HOST = re.compile(r"[a-z0-9]{5,50}\.azurecr\.(?:io|cn|us)")

TIMEOUT = 10.0  # seconds, per API call
REFRESH_MARGIN = 300.0  # a token is renewed this long before it expires
MIN_REUSE = 60.0  # a token whose expiry is near (or past: clock skew) is still reused this long
MAX_REPLY = 64 * 1024
NULL_GUID = "00000000-0000-0000-0000-000000000000"


def provider_of_host(registry: str) -> str | None:
    """``ecr``, ``gcr`` or ``acr`` for a host of that cloud's registry (exact, anchored match on the
    whole lower-case host, no port); None for any other."""
    host = registry.lower()
    if host == ECR_PUBLIC or ECR_HOST.fullmatch(host):
        return "ecr"
    if GCR_HOST.fullmatch(host):
        return "gcr"
    if ACR_HOST.fullmatch(host):
        return "acr"
    return None


def _until(expires_at: float | None, now: float, default_ttl: float) -> float:
    if expires_at is None:
        return now + default_ttl
    return max(expires_at - REFRESH_MARGIN, now + MIN_REUSE)


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


# -- Amazon ECR --------------------------------------------------------------------------------------


def resolve_ecr(candidate: DeferredCredential) -> Resolved:
    label = candidate.label
    quiet_sdk_loggers()
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise CredentialUnavailable(f"{label}: boto3 is not installed (pip install 'sigaudit[aws]')") from None
    host = candidate.registry.lower()
    match = ECR_HOST.fullmatch(host)
    public = host == ECR_PUBLIC
    try:
        session = boto3.session.Session()
        configured = session.region_name or os.environ.get("AWS_REGION")  # EKS sets AWS_REGION
        region = "us-east-1" if public else (match.group("region") if match else configured)
        if not region:
            raise CredentialUnavailable(
                f"{label}: {candidate.registry} does not name an AWS region and none is configured (set AWS_REGION)"
            )
        config = Config(
            connect_timeout=TIMEOUT / 2,
            read_timeout=TIMEOUT,
            retries={"max_attempts": 2, "mode": "standard"},
            use_fips_endpoint=bool(match and match.group("fips")),
        )
        client = session.client("ecr-public" if public else "ecr", region_name=region, config=config)
        reply = client.get_authorization_token()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise CredentialUnavailable(
            f"{label}: GetAuthorizationToken refused: {str(error.get('Code', '?'))[:80]}: "
            f"{str(error.get('Message', ''))[:300]}"
        ) from None
    except BotoCoreError as exc:
        raise CredentialUnavailable(f"{label}: {type(exc).__name__}: {str(exc)[:300]}") from None
    data = reply.get("authorizationData")
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict) or not isinstance(entry.get("authorizationToken"), str):
        raise CredentialUnavailable(f"{label}: GetAuthorizationToken reply has no authorization token")
    try:
        user, sep, password = base64.b64decode(entry["authorizationToken"], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CredentialUnavailable(f"{label}: the authorization token is not base64 user:password") from None
    if not sep or not user or not password:
        raise CredentialUnavailable(f"{label}: the authorization token is not user:password")
    return Credential(user, password), _until(_timestamp(entry.get("expiresAt")), time.time(), 3600.0)


# -- Google Artifact Registry / GCR -----------------------------------------------------------------

GCP_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


def resolve_gcr(candidate: DeferredCredential) -> Resolved:
    label = candidate.label
    quiet_sdk_loggers()
    try:
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.requests import Request
    except ImportError:
        raise CredentialUnavailable(f"{label}: google-auth is not installed (pip install 'sigaudit[gcp]')") from None

    class _Bounded(Request):
        """Every token request within TIMEOUT (google-auth's own default is 120 s per request)."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or TIMEOUT), TIMEOUT)
            return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

    try:
        credentials, _project = google.auth.default(scopes=list(GCP_SCOPES))
        credentials.refresh(_Bounded())  # type: ignore[no-untyped-call]  # google-auth is untyped here
    except google.auth.exceptions.GoogleAuthError as exc:
        raise CredentialUnavailable(f"{label}: {type(exc).__name__}: {str(exc)[:300]}") from None
    token = getattr(credentials, "token", None)
    if not isinstance(token, str) or not token:
        raise CredentialUnavailable(f"{label}: application default credentials gave no access token")
    return Credential("oauth2accesstoken", token), _until(
        _timestamp(getattr(credentials, "expiry", None)), time.time(), 300.0
    )


# -- Azure Container Registry -----------------------------------------------------------------------

ACR_SCOPE = "https://containerregistry.azure.net/.default"


def exchange_acr_token(registry: str, entra_token: str, *, tenant: str | None = None) -> str:
    """POST ``https://<registry>/oauth2/exchange`` (grant ``access_token``) → the ACR refresh token
    (the ACR token-exchange protocol, docs/AAD-OAuth.md of Azure/acr). Bounded in size, and in time by
    a wall-clock deadline over the whole exchange (:mod:`scanner.registry.deadline`): httpx's own
    timeout is per read, which a registry trickling its answer restarts for ever."""
    import httpx

    from scanner.registry import deadline

    form = {"grant_type": "access_token", "service": registry, "access_token": entra_token}
    if tenant:
        form["tenant"] = tenant
    try:
        with (
            deadline.within(time.monotonic() + TIMEOUT, f"no answer within {TIMEOUT:g} s"),
            deadline.install(httpx.Client(timeout=TIMEOUT, follow_redirects=False)) as http,
            http.stream("POST", f"https://{registry}/oauth2/exchange", data=form,
                        headers={"Accept-Encoding": "identity"}) as resp,
        ):
            if resp.status_code != 200:
                raise CredentialUnavailable(f"{registry}/oauth2/exchange answered {resp.status_code}")
            # The body as sent, never inflated: httpx inflates a whole network chunk at once, layer on
            # layer ("gzip, gzip"), so a few hundred bytes took hundreds of MiB before the cap saw them.
            encoding = resp.headers.get("content-encoding", "").strip().lower()
            if encoding not in ("", "identity"):
                raise CredentialUnavailable(
                    f"{registry}/oauth2/exchange answered a {encoding[:40]!r}-encoded body, not asked for")
            body = b""
            for chunk in resp.iter_raw():
                body += chunk
                if len(body) > MAX_REPLY:
                    raise CredentialUnavailable(f"{registry}/oauth2/exchange reply exceeds {MAX_REPLY} bytes")
    except httpx.HTTPError as exc:
        raise CredentialUnavailable(f"{registry}/oauth2/exchange: {type(exc).__name__}") from None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    token = doc.get("refresh_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialUnavailable(f"{registry}/oauth2/exchange reply has no refresh_token")
    return token


def resolve_acr(candidate: DeferredCredential) -> Resolved:
    label = candidate.label
    quiet_sdk_loggers()
    try:
        from azure.core.exceptions import AzureError
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise CredentialUnavailable(
            f"{label}: azure-identity is not installed (pip install 'sigaudit[azure]')"
        ) from None
    try:
        entra = DefaultAzureCredential(exclude_interactive_browser_credential=True).get_token(ACR_SCOPE)
    except AzureError as exc:
        raise CredentialUnavailable(f"{label}: {type(exc).__name__}: {str(exc)[:300]}") from None
    try:
        refresh = exchange_acr_token(candidate.registry, entra.token)
    except CredentialUnavailable as exc:
        raise CredentialUnavailable(f"{label}: {exc}") from None
    # The ACR refresh token lives about 3 h; the Entra token's expiry bounds how long we reuse it.
    return Credential(NULL_GUID, refresh), _until(float(entra.expires_on), time.time(), 300.0)


RESOLVERS: dict[str, Resolver] = {"ecr": resolve_ecr, "gcr": resolve_gcr, "acr": resolve_acr}
